"""The error of `pilot autolabel`: one line naming the file or field at fault, and what to do next."""

from __future__ import annotations

from bot.errors import PilotError


class AutolabelError(PilotError):
    """A run cannot go on: bad input (names file, episodes), clusters nobody named, a stage that failed.

    Finished stages stay in the work folder, so the rerun after the fix resumes where this stopped.
    """


class ReviewRequestError(AutolabelError):
    """A request to the review page's API that the page itself never sends (unknown cluster or item, a name
    not in the class list, malformed JSON): answered with HTTP 400 and this one line, nothing written."""
