"""Checks the shipped editor workflows in ComfyUI's real editor (not part of the test suite: CI has no ComfyUI and no
browser). Run by hand against a server with the pack in custom_nodes:

    python tests/helpers/editor_check.py PORT [SCREENSHOT_DIR]    # needs playwright and a Chromium at /usr/bin/chromium

For each example_workflows/*.json: load it in the editor (headless Chromium), convert it with the editor's own
graphToPrompt and compare with the shipped API file, and save a screenshot of what a user sees on opening it; also
lists the templates the server offers for the pack."""

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8195
PACK = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "editor_shots")
OUT.mkdir(exist_ok=True)

def norm(api):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}

async def main():
    templates = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/workflow_templates"))
    print("templates listed for packs:", {k: sorted(v) for k, v in templates.items()})
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 720})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"http://127.0.0.1:{PORT}/", wait_until="networkidle", timeout=120000)
        await page.wait_for_function("window.app && window.app.graph", timeout=120000)
        for path in sorted((PACK / "example_workflows").glob("*.json")):
            wf = json.loads(path.read_text())
            await page.evaluate("wf => window.app.loadGraphData(wf)", wf)
            await page.wait_for_timeout(1500)
            await page.screenshot(path=str(OUT / f"{path.stem}.png"))
            prompt = await page.evaluate("async () => (await window.app.graphToPrompt()).output")
            api = json.loads((PACK / "workflows" / "api" / f"{path.stem}_api.json").read_text())
            same = norm(prompt) == norm(api)
            diff = [] if same else [(k, norm(prompt).get(k), norm(api).get(k)) for k in sorted(set(prompt) | set(api)) if norm(prompt).get(k) != norm(api).get(k)]
            print(path.stem, "editor -> API equals the shipped file:", same, diff[:2])
        print("page errors:", errors[:5])
        await browser.close()

asyncio.run(main())
