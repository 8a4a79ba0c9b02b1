"""Click collection web tool: the paper's annotation workflow in the browser.

The workflow is described in docs/method.md, section 1.

`python -m click_supervision.annotate --dataset=... --split=... --out=clicks.jsonl` serves a
local web app: instructions, a qualification test on synthetic polygons with feedback, the main
task (one center click per (image, class) pair and annotator), hidden gold pairs for quality
control and a summary page. Modules:

  app.py            the workflow's rules and state (no HTTP)
  server.py         the HTTP routes (standard library server)
  store.py          durable append-only JSON Lines files
  qualification.py  seeded synthetic polygons and their scoring
  static/           the pages (plain HTML, CSS, JS; no build step)
"""
