"""Screenshot a page of the running stack in headless Chromium (Debian's ``chromium``): the README's
pictures of the training pipeline's graph in the Airflow UI (logged in with the platform's token),
and of the monitoring dashboard.

    .venv/bin/python docs/screenshot.py --run <dag run id> --out docs/images/fraud_training_pipeline.png
    .venv/bin/python docs/screenshot.py --dashboard http://127.0.0.1:8050/?project=fraud&model=fraud \
        --out docs/images/monitor_dashboard.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import sync_playwright

from fjord.airflow.client import AirflowClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dag", default="fraud_training_pipeline")
    parser.add_argument("--run", help="the DAG run id")
    parser.add_argument("--dashboard", help="the monitoring dashboard's URL instead of a DAG run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if args.dashboard:
        return dashboard(args.dashboard, args.out, args.browser)
    if not args.run:
        parser.error("--run or --dashboard is required")
    client = AirflowClient.connect()
    token = client._login()
    url = f"{client.url}/dags/{quote(args.dag)}/runs/{quote(args.run)}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 900}, device_scale_factor=1)
        page.context.add_cookies([{"name": "_token", "value": token, "url": client.url}])
        page.goto(url, wait_until="networkidle")
        page.wait_for_timeout(3000)  # the page re-renders once its data has arrived
        page.locator('button[value="graph"]').click()
        page.wait_for_selector(".react-flow__node", timeout=30_000)
        page.locator('button[aria-label="Expand all task groups"]').click()
        page.wait_for_timeout(1000)
        page.mouse.click(1133, 475)  # the details panel's fold handle: the graph gets the width
        page.wait_for_timeout(2000)
        page.locator(".react-flow__controls-fitview").click()
        page.wait_for_timeout(1500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    print(args.out)
    return 0


def dashboard(url: str, out: Path, browser_path: str) -> int:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1250}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_function("window.fjordCharts.drift && window.fjordCharts.histogram")
        page.wait_for_timeout(1000)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
