"""The review page end to end: real photos ingested and clustered by a Ray job, then Debian's Chromium,
driven by Playwright, names two clusters, merges the persons and undoes it, with API keys on.
Screenshots go to artifacts/ui/."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import RayHead
from .test_serve import PEOPLE, get, serving, wait_for_job

CHROMIUM = Path("/usr/bin/chromium")
KEY = "s3cret-review-key"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
LIBRARY = "my-bucket/my-sub"


def post(url: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": KEY},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_review_page_names_merges_and_undoes(
    ray_head: RayHead, photos_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The key reaches the replicas on the cluster by reference: no secret goes into a Ray runtime env.
    keys = tmp_path / "api-keys"
    keys.write_text(f"reviewer:{KEY}\n")
    with serving(ray_head, photos_dir, models_dir, tmp_path, FACECLUSTER_API_KEYS_FILE=str(keys)) as base:
        job = post(f"{base}/cluster-bucket-persons/my-bucket/my-sub")
        assert wait_for_job(base, job["job_id"], KEY)["status"] == "SUCCEEDED"
        with urllib.request.urlopen(f"{ray_head.dashboard}/api/serve/applications/", timeout=30) as response:
            deployed = response.read().decode()
        assert "FACECLUSTER_API_KEYS_FILE" in deployed and KEY not in deployed
        with urllib.request.urlopen(f"{ray_head.dashboard}/api/jobs/", timeout=30) as response:
            assert KEY not in response.read().decode()
        clusters = get(f"{base}/api/v1/faces/clusters?library={LIBRARY}", KEY)["clusters"]
        assert len(clusters) == len(PEOPLE)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/ui")
            # Every read needs the key: the page asks for it once, then loads everything it waited for.
            expect(page.get_by_test_id("key-form")).to_be_visible()
            page.get_by_test_id("api-key").fill(KEY)
            page.get_by_test_id("save-key").click()
            cards = page.get_by_test_id("cluster-card")
            expect(cards).to_have_count(len(PEOPLE))
            page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=ARTIFACTS / "1-clusters.png", full_page=True)

            # Naming a cluster: the key given once serves the changes too.
            first, second = clusters[0], clusters[1]
            page.locator(f"[data-cluster-id={first['cluster_id']}]").click()
            page.get_by_test_id("cluster-name").fill("Alice")
            page.get_by_test_id("label").click()
            expect(page.get_by_test_id("person-name")).to_have_text("Alice")
            page.screenshot(path=ARTIFACTS / "2-named.png", full_page=True)

            page.get_by_test_id("tab-clusters").click()
            page.locator(f"[data-cluster-id={second['cluster_id']}]").click()
            page.get_by_test_id("cluster-name").fill("Bob")
            page.get_by_test_id("label").click()
            expect(page.get_by_test_id("person-name")).to_have_text("Bob")
            expect(page.get_by_test_id("key-form")).to_be_hidden()  # asked once only

            # Merge Bob into Alice; the page lands on Alice with every face.
            page.get_by_test_id("merge-select").select_option(label=f"Alice ({first['size']})")
            page.get_by_test_id("merge").click()
            expect(page.get_by_test_id("person-name")).to_have_text("Alice")
            expect(page.get_by_test_id("face")).to_have_count(first["size"] + second["size"])
            page.screenshot(path=ARTIFACTS / "3-merged.png", full_page=True)

            persons = get(f"{base}/api/v1/faces/persons?library={LIBRARY}", KEY)["persons"]
            assert [(p["name"], p["faces"]) for p in persons] == [("Alice", first["size"] + second["size"])]

            # The run's statistics and charts, then undo of the merge.
            page.get_by_test_id("tab-runs").click()
            expect(page.get_by_test_id("run-stats")).to_contain_text("1 persons")
            expect(page.get_by_test_id("chart-similarity").locator("rect")).to_have_count(20)
            page.screenshot(path=ARTIFACTS / "4-runs.png", full_page=True)
            page.get_by_test_id("undo").click()
            expect(page.get_by_test_id("message")).to_contain_text("Undone: merge persons")
            names = sorted(p["name"] for p in get(f"{base}/api/v1/faces/persons?library={LIBRARY}", KEY)["persons"])
            assert names == ["Alice", "Bob"]

            # A bad request shows the API's own message.
            page.get_by_test_id("tab-persons").click()
            page.get_by_test_id("person-card").first.click()
            page.get_by_test_id("rename-input").fill(
                "Bob" if page.get_by_test_id("person-name").inner_text() == "Alice" else "Alice"
            )
            page.get_by_test_id("rename").click()
            expect(page.get_by_test_id("message")).to_contain_text("exists")
            page.screenshot(path=ARTIFACTS / "5-error.png", full_page=True)
            browser.close()
