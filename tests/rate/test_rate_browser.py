"""sr-rate in a real browser: headless Chromium driven by selenium (Debian's chromium and
chromium-driver, installed by `make test`). Two raters rate a session of three runs at once,
one of them reloads mid-session; the stored votes and fitted scores are checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sr_cli.rate import db
from sr_cli.rate.aggregate import bradley_terry, summarize
from tests.rate.rate_helpers import LiveServer, rate_args, three_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromium-driver are not installed (make test installs them with apt)",
)


def browser(tmp_path, name: str):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / ('profile-' + name)}",
    ):
        opts.add_argument(flag)
    # An explicit chromedriver: selenium never tries to download one.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def wait_for(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def state(driver) -> dict:
    return driver.execute_script("return Object.assign({}, document.body.dataset);")


def ready(driver):
    s = state(driver)
    return (
        s
        if s.get("state") == "done" or (s.get("state") == "rate" and s.get("ready") == "1")
        else None
    )


@pytest.fixture
def session(trained_run, eval_images, tmp_path):
    runs = three_runs(trained_run, tmp_path / "runs")
    server = LiveServer(rate_args(runs, eval_images, tmp_path / "out", "--show-gt"))
    yield server
    server.close()


def test_two_raters_in_chromium_with_a_reload(session, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = session.app
    total = len(app.items)
    alice, bob = browser(tmp_path, "alice"), browser(tmp_path, "bob")
    try:
        # Alice types her name; Bob's name has markup, which must show as text.
        bob_name = '<img src=x onerror="document.body.dataset.pwned=1">bob'
        for driver, name in ((alice, "alice"), (bob, bob_name)):
            driver.get(session.url)
            wait_for(driver, lambda d: state(d).get("state") == "login")
            driver.find_element(By.ID, "name").send_keys(name)
            driver.find_element(By.ID, "start").click()
            wait_for(driver, ready)
        assert bob.find_element(By.ID, "who").text == bob_name
        assert "pwned" not in state(bob)
        # Nothing on the page names a run.
        for word in ("tiny", "noisy"):
            assert word not in alice.page_source

        seen: dict[str, list[int]] = {"alice": [], "bob": []}

        def rate_one(driver, rater: str, use_keys: bool) -> None:
            s = wait_for(driver, ready)
            item = int(s["item"])
            seen[rater].append(item)
            left = app.run_of_image(driver.find_element(By.ID, "left-1x").get_attribute("src"))
            right = app.run_of_image(driver.find_element(By.ID, "right-1x").get_attribute("src"))
            assert left[0] == right[0] == item and {left[1], right[1]} == {
                app.items[item].run_a,
                app.items[item].run_b,
            }
            assert driver.find_element(By.ID, "gt-1x").get_attribute("naturalWidth") == "32"
            # Preference: run 0 > run 1 > run 2; Bob finds runs 1 and 2 the same.
            if rater == "bob" and {left[1], right[1]} == {1, 2}:
                choice = "same"
            else:
                choice = "left" if left[1] < right[1] else "right"
            if use_keys:
                key = {"left": Keys.ARROW_LEFT, "right": Keys.ARROW_RIGHT, "same": "s"}[choice]
                driver.find_element(By.TAG_NAME, "body").send_keys(key)
            else:
                driver.find_element(By.ID, f"btn-{choice}").click()
            wait_for(driver, lambda d: (r := ready(d)) and r.get("item") != s["item"] or (
                r and r.get("state") == "done"))  # fmt: skip

        # Zoom and synchronized pan: dragging one zoomed view moves all of them.
        from selenium.webdriver.common.action_chains import ActionChains

        body = alice.find_element(By.TAG_NAME, "body")
        body.send_keys("+")
        body.send_keys("+")
        assert alice.find_element(By.ID, "zoom-level").text == "16x"
        pan0 = state(alice)["pan"]
        ActionChains(alice).click_and_hold(alice.find_element(By.ID, "left-view")).move_by_offset(
            -20, -12
        ).release().perform()
        pan1 = state(alice)["pan"]
        assert pan1 != pan0
        transforms = {
            alice.find_element(By.ID, f"{r}-zoom").value_of_css_property("transform")
            for r in ("left", "gt", "right")
        }
        assert len(transforms) == 1  # every zoomed view shows the same place

        # Both raters at once, alternating; Alice reloads the page halfway.
        for k in range(total):
            rate_one(alice, "alice", use_keys=True)
            rate_one(bob, "bob", use_keys=False)
            if k == total // 2:
                alice.refresh()
                s = wait_for(alice, ready)
                assert s["progress"] == f"{k + 1}/{total}"  # resumed, same rater from the URL
                assert int(s["item"]) not in seen["alice"]
        for driver in (alice, bob):
            s = wait_for(driver, lambda d: state(d).get("state") == "done" and state(d))
            assert s["progress"] == f"{total}/{total}"
        assert sorted(seen["alice"]) == sorted(seen["bob"]) == sorted(app.items)
    finally:
        alice.quit()
        bob.quit()

    votes = db.session_votes(app.engine, app.session_id)
    assert len(votes) == 2 * total
    assert {v.rater for v in votes} == {"alice", bob_name}
    for v in votes:
        it = app.items[v.item_id]  # runs are stored as (run_a, run_b) with run_a < run_b
        expected = "same" if v.rater == bob_name and (it.run_a, it.run_b) == (1, 2) else "a"
        assert v.choice == expected
        assert v.left_run == app.side_runs(v.rater, v.item_id)["left"]

    res = summarize(app.engine, app.session_id, n_boot=200, seed=0)
    # 6 items per pair, 2 raters: run 0 wins all 24 of its comparisons; runs 1 vs 2: 6 wins
    # (Alice) and 6 ties (Bob).
    assert res.wins.tolist() == [[0, 12, 12], [0, 0, 6], [0, 0, 0]]
    assert res.ties.tolist() == [[0, 0, 0], [0, 0, 6], [0, 6, 0]]
    expected = bradley_terry(np.array([[0, 12, 12], [0, 0, 9], [0, 3, 0]]), alpha=0.01)
    np.testing.assert_allclose(res.score, expected, atol=1e-6)
    assert list(res.order()) == [0, 1, 2]
    assert res.ci_low[0] > res.ci_high[1] and res.ci_high[0] - res.ci_low[0] < 1.5
    # 12 items rated alike (a, a), 6 not (a, same): raw 2/3; alpha = 1 - 35 * 12 / (2 * 30 * 6).
    assert res.percent_agreement == pytest.approx(2 / 3)
    assert res.alpha_agreement == pytest.approx(-1 / 6)


@pytest.fixture
def invited(trained_run, eval_images, tmp_path):
    runs = three_runs(trained_run, tmp_path / "runs")
    server = LiveServer(rate_args(runs, eval_images, tmp_path / "out", "--raters", "alice,bob"))
    yield server
    server.close()


def test_two_invited_raters_and_the_admin_page_in_chromium(invited, tmp_path, monkeypatch):
    """Alice and Bob open their invite links in browsers of their own and vote; the admin page
    shows both raters' progress and the live scores; a browser without a link is turned away."""
    from selenium.webdriver.common.by import By

    monkeypatch.setattr("sr_cli.rate.app.ADMIN_BOOTSTRAP", 200)  # 1000 in use; faster here
    app = invited.app
    alice, bob, admin, stranger = (
        browser(tmp_path, n) for n in ("alice", "bob", "admin", "stranger")
    )
    try:
        votes = {"alice": 4, "bob": 2}
        for driver, name in ((alice, "alice"), (bob, "bob")):
            driver.get(f"{invited.url}#invite={invited.tokens[name]}")
            wait_for(driver, ready)
            # No name to type: the link says who votes; the token leaves the address bar.
            assert driver.find_element(By.ID, "who").text == name
            assert "invite" not in driver.current_url
            assert not driver.find_element(By.ID, "switch").is_displayed()
            for _ in range(votes[name]):
                s = wait_for(driver, ready)
                driver.find_element(By.ID, "btn-left").click()
                wait_for(driver, lambda d, s=s: (r := ready(d)) and r.get("item") != s["item"])
            assert wait_for(driver, ready)["progress"] == f"{votes[name]}/{len(app.items)}"
        # A reload keeps the rater (the token is kept in the browser, not in the URL).
        alice.refresh()
        assert wait_for(alice, ready)["progress"] == f"4/{len(app.items)}"
        assert alice.find_element(By.ID, "who").text == "alice"

        stranger.get(invited.url)
        s = wait_for(stranger, lambda d: state(d).get("state") == "denied" and state(d))
        assert "by invitation" in s["error"]
        stranger.get(invited.url + "admin")
        s = wait_for(stranger, lambda d: state(d).get("state") == "denied" and state(d))
        assert "admin link" in s["error"]

        admin.get(f"{invited.url}admin#admin={invited.admin}")
        s = wait_for(admin, lambda d: state(d).get("state") == "admin" and state(d))
        assert "admin=" not in admin.current_url
        assert json.loads(s["progress"]) == {"alice": 4, "bob": 2} and s["votes"] == "6"

        def rows(table: str) -> list[list[str]]:  # read at once: the page re-renders every 3 s
            return admin.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))"
                ".map(tr => Array.from(tr.cells).map(td => td.textContent));",
                table,
            )

        assert rows("#progress-table") == [["alice", "4", "18"], ["bob", "2", "18"]]
        scores = rows("#scores-table")
        res = summarize(app.engine, app.session_id, n_boot=200, seed=0)
        k = res.order()[0]
        assert len(scores) == 3 and scores[0][1] == res.names[k]
        assert scores[0][2:4] == [
            f"{res.score[k]:.3f}",
            f"[{res.ci_low[k]:.3f}, {res.ci_high[k]:.3f}]",
        ]
        # Live: a new vote shows on the admin page without a reload.
        nxt = app.next_item("bob")
        app.vote({"item": nxt["item"], "choice": "same"}, rater="bob")
        wait_for(admin, lambda d: json.loads(state(d).get("progress", "{}")).get("bob") == 3, 20)
    finally:
        for driver in (alice, bob, admin, stranger):
            driver.quit()
    assert {v.rater for v in db.session_votes(app.engine, app.session_id)} == {"alice", "bob"}
