"""A profile's params.yaml overrides as `dvc exp run` arguments (-S key=value), one per line.

    python -m scripts.profile_args profiles/flickr8k.yaml data.flickr8k.local_dir=/data/flickr8k

Extra key=value arguments override the profile's own values (Make passes the user's paths).
"""

import argparse
import json

import yaml


def overrides(profile: str, extra: list[str]) -> dict:
    with open(profile, encoding="utf-8") as f:
        values = yaml.safe_load(f)
    for item in extra:
        key, _, value = item.partition("=")
        values[key] = yaml.safe_load(value)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("extra", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    for key, value in overrides(args.profile, args.extra).items():
        print(f"-S {key}={json.dumps(value) if not isinstance(value, str) else value}")


if __name__ == "__main__":
    main()
