"""Headless Chromium for local pages, launched so that it reaches no outside host.

`Chromium` starts Debian's browser (never a downloaded one) through playwright-python with every
flag of `OFFLINE_FLAGS`, a fresh temporary profile, and config/cache folders inside that temporary
folder (so even the crash handler writes nothing under the home directory). Playwright's sync API
is bound to the thread that started it, so each `Chromium` runs the browser on a thread of its own
and `call(fn, ...)` runs `fn(page, ...)` there: the object may be used from any thread, and several
instances may run side by side.

Every process of an instance is found by its temporary folder (it appears in the command line of
the browser, its children and the crash handlers), so `close()` can make sure none is left and a
test can kill the browser on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The flags that keep Chromium from reaching for outside hosts (update checks, sign-in, safe
# browsing, DNS prefetching). Measured here: without --host-resolver-rules it still resolves
# about 20 names at start; with all of these, none.
DISABLED_FEATURES = (
    "OptimizationHints",
    "MediaRouter",
    "Translate",
    "AutofillServerCommunication",
    "CertificateTransparencyComponentUpdater",
    "InterestFeedContentSuggestions",
    "SignInProfileCreation",
)
OFFLINE_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-breakpad",
    "--disable-features=" + ",".join(DISABLED_FEATURES),
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    "--metrics-recording-only",
    "--no-default-browser-check",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
    "--force-color-profile=srgb",
    "--disable-smooth-scrolling",
)
# Chromium honours only the last --disable-features, so ours would silently drop the features
# playwright disables for its own launch; those are merged into the one flag we pass.
_PLAYWRIGHT_DISABLED = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
)
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
_CLOSE_WAIT_S = 5.0


class BrowserError(RuntimeError):
    """The browser could not be started, died, or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium binary to use: $CHROMIUM_PATH, else Debian's, else one on PATH; None if none."""
    env = os.environ.get("CHROMIUM_PATH")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for path in _CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_args(*, headless: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """The command-line flags of a launch: all of OFFLINE_FLAGS (features merged) plus `extra`."""
    features = list(DISABLED_FEATURES)
    args: list[str] = []
    for flag in (*OFFLINE_FLAGS, *extra):
        if flag.startswith("--disable-features="):
            features += [f for f in flag.split("=", 1)[1].split(",") if f and f not in features]
            continue
        if flag == "--headless" and not headless:
            continue
        args.append(flag)
    features += [f for f in _PLAYWRIGHT_DISABLED if f not in features]
    args.append("--disable-features=" + ",".join(features))
    return args


def _read_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def processes_using(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (a unique temporary path)."""
    if not marker or not os.path.isdir("/proc"):
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and marker in _read_cmdline(int(name)) and _is_running(int(name)):
            out.append(int(name))
    return sorted(out)


def _kill_and_remove(root: str) -> None:
    """Last resort for a browser nobody closed (at exit or garbage collection)."""
    for pid in processes_using(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    shutil.rmtree(root, ignore_errors=True)


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Chromium:
    """One headless Chromium with a fresh profile and one page, driven from its own thread.

    Nothing starts until `start()` (or the first `call()`). `viewport` is in CSS pixels; `scale` is
    the device scale factor (screenshots have `scale` pixels per CSS pixel).
    """

    def __init__(
        self,
        *,
        viewport: tuple[int, int] = (800, 600),
        scale: float = 1.0,
        headless: bool = True,
        executable: str | None = None,
        extra_args: Sequence[str] = (),
        call_timeout_s: float = 60.0,
    ) -> None:
        self.viewport = viewport
        self.scale = scale
        self.headless = headless
        self.executable = executable
        self.args = launch_args(headless=headless, extra=extra_args)
        self.call_timeout_s = call_timeout_s
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._playwright: Any = None
        self._context: Any = None
        self._page: Any = None
        self._cdp: Any = None
        self._root: str | None = None
        self._finalizer: weakref.finalize | None = None
        self._main_pid: int | None = None
        self._closed_event = False

    # ---- lifecycle -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._context is not None

    @property
    def root(self) -> str | None:
        """The temporary folder of this browser (profile, config, cache); None when not started."""
        return self._root

    def start(self) -> None:
        with self._lock:
            if self._context is not None:
                return
            executable = self.executable or find_chromium()
            if executable is None:
                raise BrowserError(
                    "no Chromium binary found (apt-get install chromium, or set CHROMIUM_PATH)"
                )
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
            self._root = tempfile.mkdtemp(prefix="trajkit-chromium-")
            self._finalizer = weakref.finalize(self, _kill_and_remove, self._root)
            try:
                self._submit(self._start_in_thread, executable).result(timeout=self.call_timeout_s)
            except BaseException as err:
                self._teardown()
                if isinstance(err, FutureTimeout):
                    raise BrowserError(f"Chromium did not start within {self.call_timeout_s:.0f} s") from None
                raise BrowserError(f"Chromium failed to start: {err}") from err

    def _start_in_thread(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        root = Path(self._root or "")
        env = dict(os.environ)
        # The crash handler and a few helpers write under XDG folders; keep them in our folder.
        env["XDG_CONFIG_HOME"] = str(root / "config")
        env["XDG_CACHE_HOME"] = str(root / "cache")
        self._closed_event = False
        self._playwright = sync_playwright().start()
        self._context = self._playwright.chromium.launch_persistent_context(
            str(root / "profile"),
            executable_path=executable,
            headless=self.headless,
            args=self.args,
            env=env,
            viewport={"width": self.viewport[0], "height": self.viewport[1]},
            device_scale_factor=self.scale,
        )
        self._context.on("close", lambda _ctx: setattr(self, "_closed_event", True))
        pages = self._context.pages
        self._page = pages[0] if pages else self._context.new_page()
        self._cdp = self._context.new_cdp_session(self._page)
        self._main_pid = self._find_main_pid()

    def close(self) -> None:
        """Close the browser, make sure none of its processes is left, remove its folder."""
        with self._lock:
            self._teardown()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def restart(self) -> None:
        with self._lock:
            self._teardown()
        self.start()

    def _teardown(self) -> None:
        if self._executor is not None and (self._context is not None or self._playwright is not None):
            future = self._executor.submit(self._stop_in_thread)
            try:
                future.result(timeout=_CLOSE_WAIT_S)
            except BaseException:  # a hung or dead browser is killed below
                pass
        self._kill_all()
        if self._executor is not None and self._playwright is not None:
            # The driver may only be stopped from its own thread; after the kill it returns quickly.
            try:
                self._executor.submit(self._stop_driver).result(timeout=_CLOSE_WAIT_S)
            except BaseException:
                pass
        self._context = self._page = self._cdp = self._playwright = None
        self._main_pid = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _stop_in_thread(self) -> None:
        try:
            if self._context is not None:
                self._context.close()
        finally:
            self._context = None
            self._stop_driver()

    def _stop_driver(self) -> None:
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            playwright.stop()

    def _kill_all(self) -> None:
        if self._root is None:
            return
        deadline = time.monotonic() + _CLOSE_WAIT_S
        while True:
            pids = processes_using(self._root)
            if not pids:
                return
            if time.monotonic() > deadline:
                raise BrowserError(f"Chromium processes {pids} did not exit")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)

    # ---- state ---------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every live process of this browser (browser, renderers, helpers, crash handlers)."""
        return processes_using(self._root) if self._root else []

    def main_pid(self) -> int | None:
        """The browser process itself (the one without a --type= switch); None when not running."""
        return self._main_pid if self._context is not None else None

    def _find_main_pid(self) -> int | None:
        for pid in self.pids():
            cmd = _read_cmdline(pid)
            if "--type=" not in cmd and "crashpad" not in cmd:
                return pid
        return None

    def alive(self) -> bool:
        if self._context is None or self._closed_event:
            return False
        # Where /proc cannot tell (no pid found), trust playwright's close event alone.
        return self._main_pid is None or _is_running(self._main_pid)

    def memory_mib(self) -> float:
        """Proportional set size of all the browser's processes, in MiB."""
        return sum(_pss_kib(pid) for pid in self.pids()) / 1024.0

    # ---- work ----------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._executor is None:
            raise BrowserError("the browser is closed")
        return self._executor.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run `fn(page, *args)` on the browser's thread and return its result.

        A call that runs past its timeout kills the browser (which ends the stuck call) and raises
        BrowserError; `restart()` or the owner's next reset brings up a new one.
        """
        if self._context is None:
            self.start()
        future = self._submit(lambda: fn(self._page, *args))
        try:
            return future.result(timeout=timeout_s or self.call_timeout_s)
        except FutureTimeout:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._closed_event = True
            raise BrowserError(
                f"the browser did not answer within {timeout_s or self.call_timeout_s:.0f} s"
            ) from None

    def cdp(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one DevTools command to the page (call this from inside `call`)."""
        return self._cdp.send(method, params or {})

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
