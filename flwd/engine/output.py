"""The output pipeline of a run: bytes from pipes to stored, redacted, bounded lines.

Order matters and is fixed here: complete lines are cut out of the stream, secret values
are replaced by `***`, over-long lines are cut with a marker, and only then does anything
reach the journal. Lines are stored in chunks (one row per read), and a run keeps at most
`head_bytes` from its start and a rolling `tail_bytes` from its end, with markers saying
where the tail begins and, at the end, what was dropped in between — the error that
explains a failure is usually at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from flwd.events.journal import Journal
from flwd.jobs.schemas import MIN_MASKED_LENGTH

MASK = "***"
#: how often output past the head is stored and published (and a step's end flushes it)
TAIL_FLUSH_INTERVAL = 1.0
_FLWD_LINE: dict[str, Any] = {"level": "warning", "stream": "flwd", "step_id": None}
_MASK_B = MASK.encode()


# A secret shorter than MIN_MASKED_LENGTH is not masked inside free text (log lines,
# error messages, strings of a result), where masking every "ab" or "12" would ruin the
# text and hide nothing; it is still masked wherever it stands alone (`flwd validate`
# warns about a secret whose schema allows it).


class Redactor:
    """Replaces secret values by `***`: inside free text (output bytes, error messages) the
    forms of at least `MIN_MASKED_LENGTH` characters; in a parsed JSON value, every scalar
    equal to a secret whatever its length (`value`)."""

    def __init__(self, secrets: list[str], *, has_secrets: bool = False) -> None:
        """`secrets`: every text form of every secret (see
        `flwd.jobs.arguments.secret_values`); `has_secrets`: the run has secret arguments
        even if none has text to mask (a boolean), so its arguments file is blanked."""
        self.exact = frozenset(s for s in secrets if s)
        self.has_secrets = has_secrets or bool(self.exact)
        values: set[str] = set()
        for secret in self.exact:
            # the forms a secret takes inside a JSON string (results, args echoed as JSON),
            # with and without \u escapes
            for form in (
                secret,
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
            ):
                if len(form) >= MIN_MASKED_LENGTH:
                    values.add(form)
            # a multi-line secret printed line by line; tiny fragments would mask noise
            values.update(p for p in secret.splitlines() if len(p) >= MIN_MASKED_LENGTH)
        # longest first, so a secret containing another is masked whole
        self.values = sorted(values, key=len, reverse=True)
        self.values_b = [v.encode() for v in self.values]
        self.longest = max((len(v) for v in self.values_b), default=0)

    def __bool__(self) -> bool:
        return self.has_secrets

    def mask_bytes(self, data: bytes) -> bytes:
        for value in self.values_b:
            if value in data:
                data = data.replace(value, _MASK_B)
        return data

    def mask_text(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def reveals(self, text: str) -> bool:
        """Whether `text` still holds a secret of any length, as it is or as Python quotes
        it (for messages that quote values: better a generic message than a leak)."""
        return any(s in text or repr(s)[1:-1] in text for s in self.exact)

    def cut_tail(self, head: bytes) -> bytes:
        """Mask a secret's beginning left at the end of `head` by a cut mid-line."""
        for value in self.values_b:
            for k in range(min(len(value) - 1, len(head)), 0, -1):
                if head.endswith(value[:k]):
                    return head[:-k] + _MASK_B
        return head

    def value(self, value: Any) -> Any:
        """A parsed JSON value with secrets masked: a scalar equal to a secret (a string,
        or a number or boolean whose JSON text is the secret) becomes the string `***`;
        other strings, object keys included, have the secrets inside them masked as in
        free text. Structure and every other value are kept as they are."""
        if not self.exact:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return MASK if value in self.exact else self.mask_text(value)
        if isinstance(value, dict):
            return {self._walk(key): self._walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if isinstance(value, bool):
            return MASK if ("true" if value else "false") in self.exact else value
        if isinstance(value, int | float):
            return MASK if json.dumps(value) in self.exact or str(value) in self.exact else value
        return value


class RunOutput:
    """Output of one run, shared by its steps: the head/tail budget is per run.

    The first `head_bytes` are stored and published as they arrive. Past them, output
    goes to a rolling tail: chunks wait in memory (the oldest dropped while the newer
    ones hold `tail_bytes`) and are stored and published every `flush_interval` seconds
    and whenever a step ends, and stored tail rows are deleted again while the newer ones
    hold `tail_bytes`. A follower thus sees a chatty run's output live throughout, while
    a run stores at most `head_bytes` plus `tail_bytes` plus one chunk, and writes at most
    `tail_bytes` per `flush_interval` past its head, however fast its steps print.
    """

    def __init__(
        self,
        journal: Journal,
        run_id: str,
        job_id: str,
        redactor: Redactor,
        *,
        line_limit: int,
        head_bytes: int,
        tail_bytes: int,
        flush_interval: float | None = None,
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.job_id = job_id
        self.redactor = redactor
        self.line_limit = line_limit
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self.flush_interval = TAIL_FLUSH_INTERVAL if flush_interval is None else flush_interval
        self.head_used = 0
        self.in_tail = False
        #: tail chunks not stored yet: (data, text, lines, size)
        self.pending: deque[tuple[dict[str, Any], str, int, int]] = deque()
        self.pending_used = 0
        #: tail chunks stored: (row id, lines, size)
        self.stored: deque[tuple[int, int, int]] = deque()
        self.stored_used = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.total_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def stream(self, step_id: str, stream: str) -> LineStream:
        return LineStream(self, step_id, stream)

    def emit(self, data: dict[str, Any], text: str, lines: int, size: int) -> None:
        """Store a chunk of lines (`size` bytes, line ends included) within the run's cap.

        Never waits: the reader of the pipes pauses while the store's queue is full."""
        self.total_bytes += size
        if not self.in_tail:
            room = self.head_bytes - self.head_used
            if size <= room:
                self.head_used += size
                self.journal.post_output(self.run_id, self.job_id, data, text, lines)
                return
            # The chunk crosses the end of the head: its first lines still belong there
            # (a chunk may be far larger than a small head budget).
            parts = text.split("\n")
            keep = used = 0
            for part in parts[:-1]:
                cost = len(part.encode()) + 1
                if used + cost > room:
                    break
                keep, used = keep + 1, used + cost
            if keep:
                self.head_used += used
                head = "\n".join(parts[:keep])
                self.journal.post_output(self.run_id, self.job_id, data, head, keep)
                text, lines, size = "\n".join(parts[keep:]), lines - keep, size - used
            self.in_tail = True
            self.journal.post_output(
                self.run_id,
                self.job_id,
                dict(_FLWD_LINE),
                f"[flwd: the run's output passed {self.head_bytes} bytes; from here on only "
                f"its last {self.tail_bytes} bytes are kept, shown every "
                f"{self.flush_interval:g}s]",
                1,
            )
        self.pending.append((data, text, lines, size))
        self.pending_used += size
        # whole chunks go while the newer ones still fill the tail
        while len(self.pending) > 1 and self.pending_used - self.pending[0][3] >= self.tail_bytes:
            _, _, old_lines, old_size = self.pending.popleft()
            self.pending_used -= old_size
            self._drop(old_lines, old_size)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def _drop(self, lines: int, size: int) -> None:
        self.dropped_lines += lines
        self.dropped_bytes += size

    def flush(self) -> None:
        """Store and publish the tail chunks waiting in memory, and delete the stored ones
        no longer needed (called every `flush_interval` and when a step's pipes close)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.pending:
            data, text, lines, size = self.pending.popleft()
            row = self.journal.post_output(self.run_id, self.job_id, data, text, lines)
            self.stored.append((row, lines, size))
            self.stored_used += size
        self.pending_used = 0
        doomed = []
        while len(self.stored) > 1 and self.stored_used - self.stored[0][2] >= self.tail_bytes:
            row, lines, size = self.stored.popleft()
            self.stored_used -= size
            self._drop(lines, size)
            doomed.append(row)
        if doomed:
            self.journal.delete_output(doomed)

    async def note(self, message: str, *, step_id: str | None = None) -> None:
        """A line written by flwd itself into the run's log (level `warning`)."""
        data = {**_FLWD_LINE, "step_id": step_id}
        await self.journal.append_output(self.run_id, self.job_id, data, message, 1)

    async def finish(self) -> None:
        """Flush the tail, then say what was dropped, if anything."""
        self.flush()
        if self.dropped_lines:
            kept = self.stored_used
            await self.note(
                f"[flwd: {self.dropped_lines} lines ({self.dropped_bytes} bytes) of output "
                f"were dropped between the first {self.head_used} and the last {kept} bytes "
                "of the run's output, which are kept]"
            )


class LineStream:
    """Turns one pipe's bytes into complete, redacted, length-limited lines."""

    def __init__(self, output: RunOutput, step_id: str, stream: str) -> None:
        self.output = output
        self.redactor = output.redactor
        self.limit = output.line_limit
        self.pending = b""
        self.discarding = False
        level = "error" if stream == "stderr" else "info"
        self.data: dict[str, Any] = {"level": level, "stream": stream, "step_id": step_id}
        self.marker = f" [flwd: line cut at {self.limit} bytes]".encode()

    def feed(self, chunk: bytes) -> None:
        data = self.pending + chunk if self.pending else chunk
        if self.discarding:
            newline = data.find(b"\n")
            if newline < 0:
                self.pending = b""
                return
            data = data[newline + 1 :]
            self.discarding = False
        last = data.rfind(b"\n")
        complete, rest = (data[:last], data[last + 1 :]) if last >= 0 else (b"", data)
        if len(rest) > self.limit + self.redactor.longest:
            # a line with no end in sight: keep its head now, drop the rest up to '\n'
            head = self.redactor.cut_tail(self.redactor.mask_bytes(rest)[: self.limit])
            complete = complete + b"\n" + head + self.marker if last >= 0 else head + self.marker
            rest = b""
            self.discarding = True
        self.pending = rest
        if last >= 0 or complete:
            self._emit(complete, ended=last >= 0)

    def close(self) -> None:
        if self.pending:
            self._emit(self.pending, ended=False)
            self.pending = b""

    def _emit(self, block: bytes, *, ended: bool) -> None:
        block = self.redactor.mask_bytes(block)
        if _has_line_longer_than(block, self.limit + len(self.marker)):
            block = b"\n".join(
                line
                if len(line) <= self.limit + len(self.marker)
                else line[: self.limit] + self.marker
                for line in block.split(b"\n")
            )
        text = block.decode("utf-8", "replace")
        # sizes count each line's end, so that the cap and its marker add up
        self.output.emit(self.data, text, text.count("\n") + 1, len(block) + ended)


def _has_line_longer_than(block: bytes, limit: int) -> bool:
    """Whether a line of `block` (split at b"\\n") is longer than `limit` bytes.

    Jumps a line-limit ahead at a time, looking back for a line end with `rfind`: a
    64 KiB read costs a few calls instead of a split into hundreds of lines.
    """
    start, end = 0, len(block)
    while end - start > limit:
        newline = block.rfind(b"\n", start, start + limit + 1)
        if newline < 0:
            return True
        start = newline + 1
    return False
