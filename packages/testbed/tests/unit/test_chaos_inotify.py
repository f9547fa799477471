"""The directory watch the chaos suite times its kills with."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from vpccni.testbed.chaos.inotify import IN_CREATE, IN_DELETE, DirectoryWatch


def test_it_wakes_on_the_matching_event_only(tmp_path: Path) -> None:
    (tmp_path / "gone.json").write_text("{}")
    with DirectoryWatch(str(tmp_path), IN_CREATE | IN_DELETE) as watch:

        def act() -> None:
            time.sleep(0.1)
            (tmp_path / "other").write_text("x")
            (tmp_path / "gone.json").unlink()

        threading.Thread(target=act).start()
        assert (
            watch.wait(lambda name, mask: name.endswith(".json") and bool(mask & IN_DELETE), 5.0)
            == "gone.json"
        )


def test_it_gives_up_after_the_timeout(tmp_path: Path) -> None:
    with DirectoryWatch(str(tmp_path), IN_CREATE) as watch:
        started = time.monotonic()
        assert watch.wait(lambda name, mask: True, 0.2) is None
        assert time.monotonic() - started >= 0.2
