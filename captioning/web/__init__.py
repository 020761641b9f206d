"""`captioning serve`: the captioner as a web page and a REST API (FastAPI on uvicorn).

One module per job: `app` (the routes around one loaded Captioner), `batching` (requests arriving
together share one model call), `limits` (what an untrusted request may cost, enforced before the
model sees it). The page itself (HTML, JS, CSS) is in `static/`.
"""
