"""Progress for the command line: tqdm's bar on a terminal, plain lines elsewhere.

Torch-free (``segloss weight-map`` uses it). When the stream is not a
terminal (a log file, CI, a pipe), or tqdm is not installed, there is no bar:
``bar`` is None and callers print plain lines through :meth:`Progress.write`,
so logs never fill with carriage returns and a missing tqdm never stops a
command (``pip install segloss[cli]`` or ``[demo]`` brings it).
"""

import sys
from typing import Optional, TextIO


class Progress:
    """A tqdm bar of ``total`` steps on ``stream`` (stderr by default) if it is
    a terminal and tqdm is importable; otherwise nothing is drawn.

    Use :meth:`write` for lines that must be seen either way (it prints them
    above the bar, or as plain lines), and :attr:`shown` to decide whether to
    print the plain per-step lines that stand in for the bar.
    """

    def __init__(self, total: int, description: str = "", unit: str = "it",
                 stream: Optional[TextIO] = None, enabled: bool = True) -> None:
        # Looked up at call time, not import time: tests and callers swap sys.stderr.
        self.stream = sys.stderr if stream is None else stream
        self.bar = None
        if enabled and self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=description or None, unit=unit,
                                file=self.stream, dynamic_ncols=True, leave=True)

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn (else callers print plain lines)."""
        return self.bar is not None

    def update(self, steps: int = 1, status: Optional[str] = None) -> None:
        """Advances the bar; ``status`` is shown after it (e.g. the current loss)."""
        if self.bar is not None:
            if status is not None:
                self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(steps)

    def write(self, line: str) -> None:
        """Prints ``line`` above the bar, or as a plain line when there is no bar."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None  # later lines are plain
        self.stream.flush()
