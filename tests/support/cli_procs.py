"""`python -m faultkit ...` as real child processes for tests, and stopping them cleanly."""
import signal
import subprocess
import sys


def spawn(*args, **popen):
    """Start ``python -m faultkit *args`` with text pipes for stdout and stderr (line-buffered)."""
    opts = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    opts.update(popen)
    return subprocess.Popen([sys.executable, "-m", "faultkit", *args], **opts)


def stop(p):
    """SIGCONT (it may be stopped), then SIGTERM (a run under coverage saves the child's
    data), SIGKILL if it lingers; always reaped."""
    if p.poll() is None:
        p.send_signal(signal.SIGCONT)
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    p.wait(timeout=10)
