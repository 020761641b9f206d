"""The data.folder.fingerprint `make train` passes: DVC reads params.yaml, never the user's folder,
so a digest of the folder's files and of the captions CSV is how it sees them change.

    python -m scripts.folder_fingerprint /path/to/folder [/path/to/captions.csv]
"""

import argparse

from captioning.datasets.folder import fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir")
    parser.add_argument("captions", nargs="?", help="default: captions.csv inside images_dir")
    args = parser.parse_args()
    print(fingerprint(args.images_dir, args.captions))


if __name__ == "__main__":
    main()
