"""What a report shows in place of a part that does not exist yet: what is missing and how to make it.

A value object only; it never raises, so every report section can return one instead of crashing.
"""

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Missing:
    """A missing part of the results: `what` is absent, `how` says the command that produces it."""
    what: str
    how: str

    def __str__(self) -> str:
        return f"missing: {self.what} ({self.how})"

    def _repr_html_(self) -> str:
        return (f'<p class="missing" style="color:#8a4b00"><b>missing:</b> {html.escape(self.what)} '
                f"({html.escape(self.how)})</p>")
