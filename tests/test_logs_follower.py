"""The follower reads every complete line exactly once, through writes, rotations and restarts.

The property test drives a real file on disk the way a logging daemon and logrotate do:
partial writes, rename-and-create (the writer may keep appending to the renamed file until
it reopens), copytruncate, and "kill -9" restarts that throw away everything read since
the last saved positions. Every line carries a unique sequence number, as real log lines
carry a timestamp, and the test compares the lines the follower committed with the lines
it wrote itself.
"""

from __future__ import annotations

import os
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwatch.logs.follower import Follower


class World:
    """A log file, its writer and a follower whose committed output is the test's subject."""

    def __init__(self, directory: str, start_at: str = "beginning"):
        self.dir = directory
        self.path = os.path.join(directory, "app.log")
        self.handle = open(self.path, "ab")  # noqa: SIM115 - the writer's descriptor, O_APPEND like a daemon's
        self.seq = 0
        self.partial = b""
        self.written: list[bytes] = []  # every complete line, in order
        self.rotations = 0
        self.rotated_since_commit = False
        self.detached = False  # renamed, writer not reopened yet
        self.saved: list[dict] | None = None
        self.committed: list[bytes] = []
        self.follower = self._new_follower(start_at)
        self.poll_and_commit()  # the follower is running before the first rotation

    def _new_follower(self, start_at: str) -> Follower:
        follower = Follower(self.path, start_at=start_at, rotated_grace=0.0, max_line_bytes=4096)
        if self.saved is not None:
            follower.restore(self.saved)
        return follower

    # ---------------------------------------------------------------- writer side

    def write(self, lines: int, cut: int) -> None:
        data = self.partial
        for _ in range(lines):
            self.seq += 1
            line = f"{self.seq:08d}|" + "x" * (self.seq * 7 % 50) + "\n"
            data += line.encode()
            self.written.append(line.encode())
        # Hold back the tail as a partial line on disk; a later write completes it.
        cut = min(cut, len(data)) if lines else 0
        head, self.partial = data[:len(data) - cut], data[len(data) - cut:]
        self.handle.write(head)
        self.handle.flush()

    def complete_partial(self) -> None:
        self.handle.write(self.partial)
        self.handle.flush()
        self.partial = b""

    def rename_rotate(self) -> None:
        self.complete_partial()
        self.rotations += 1
        os.rename(self.path, f"{self.path}.{self.rotations}")
        self.detached = True
        self.rotated_since_commit = True

    def reopen(self) -> None:
        self.complete_partial()  # a daemon finishes its line before it reopens
        self.handle.close()
        self.handle = open(self.path, "ab")  # noqa: SIM115 - the writer's descriptor, like a daemon's
        self.detached = False

    def copytruncate(self) -> None:
        self.complete_partial()
        self.rotations += 1
        shutil.copyfile(self.path, f"{self.path}.{self.rotations}")
        os.truncate(self.path, 0)
        self.rotated_since_commit = True

    # ---------------------------------------------------------------- follower side

    def poll_and_commit(self) -> None:
        lines = b"".join(self.follower.read()).splitlines(keepends=True)
        self.saved = self.follower.positions()
        self.committed.extend(lines)
        self.rotated_since_commit = False

    def poll_and_crash(self) -> None:
        """Read, then die before saving: the restarted follower resumes from the last save."""
        list(self.follower.read())
        self.follower.close()
        self.follower = self._new_follower("beginning")

    def finish(self) -> None:
        if self.detached:
            self.reopen()
        self.complete_partial()
        self.poll_and_commit()
        self.handle.close()
        self.follower.close()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 30), st.integers(0, 60)),
        st.tuples(st.just("poll")),
        st.tuples(st.just("crash")),
        st.tuples(st.just("rename")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("copytruncate")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_every_complete_line_is_read_exactly_once(tmp_path_factory, ops):
    world = World(str(tmp_path_factory.mktemp("follow")))
    for op in ops:
        kind = op[0]
        if kind == "write":
            world.write(op[1], op[2])
        elif kind == "poll":
            world.poll_and_commit()
        elif kind == "crash":
            world.poll_and_crash()
        elif kind == "reopen" and world.detached:
            world.reopen()
        elif kind in ("rename", "copytruncate") and not world.rotated_since_commit and not world.detached:
            # One rotation per committed read: faster rotation than the poll interval is out of scope.
            getattr(world, "rename_rotate" if kind == "rename" else "copytruncate")()
    world.finish()
    assert world.committed == world.written


def test_partial_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntw")
    follower = Follower(str(path), start_at="beginning")
    assert b"".join(follower.read()) == b"one\n"
    with open(path, "ab") as handle:
        handle.write(b"o\n")
    assert b"".join(follower.read()) == b"two\n"


def test_first_run_starts_after_the_last_complete_line(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"old\nstill-old\npart")
    follower = Follower(str(path), start_at="end")
    assert b"".join(follower.read()) == b""
    with open(path, "ab") as handle:
        handle.write(b"ial\nnew\n")
    # the line that was partial at start-up completes after it: it is new, so it is read
    assert b"".join(follower.read()) == b"partial\nnew\n"


def test_glob_picks_up_new_files_from_their_start(tmp_path):
    (tmp_path / "a.log").write_bytes(b"a1\n")
    follower = Follower(str(tmp_path / "*.log"), start_at="end")
    assert b"".join(follower.read()) == b""
    (tmp_path / "b.log").write_bytes(b"b1\nb2\n")
    with open(tmp_path / "a.log", "ab") as handle:
        handle.write(b"a2\n")
    assert sorted(b"".join(follower.read()).splitlines()) == [b"a2", b"b1", b"b2"]


def test_reused_inode_with_other_content_is_read_from_the_start(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"2026-01-01T00:00:00Z first generation line\n" * 3)
    follower = Follower(str(path), start_at="beginning")
    list(follower.read())
    saved = follower.positions()
    follower.close()
    # While regwatch is down the file is truncated and rewritten past the saved offset:
    # same inode, bigger size, different first bytes.
    path.write_bytes(b"2026-01-02T00:00:00Z second generation, a longer line\n" * 4)
    restarted = Follower(str(path), start_at="beginning")
    restarted.restore(saved)
    assert b"".join(restarted.read()).count(b"second generation") == 4


def test_too_long_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"before\n" + b"y" * 10000 + b"\nafter\n")
    follower = Follower(str(path), start_at="beginning", max_line_bytes=4096)
    assert b"".join(follower.read()) == b"before\nafter\n"
    assert follower.errors["line_too_long"] == 1
