"""The daemon freezes what start-up leaves behind out of the cyclic collector."""

import subprocess
import sys
import textwrap


def test_start_up_objects_are_frozen_and_start_up_garbage_is_not():
    """Live objects end up frozen (a full collection no longer walks them);
    a reference cycle that was already garbage is collected, not pinned."""
    script = textwrap.dedent("""
        import gc, weakref
        from msisdnd.daemon import _freeze_start_up_objects

        class Node:
            pass

        garbage = Node()
        garbage.self = garbage
        dead = weakref.ref(garbage)
        del garbage
        kept = [Node() for _ in range(1000)]
        before = gc.get_freeze_count()
        _freeze_start_up_objects()
        print(before, gc.get_freeze_count(), dead() is None, len(kept))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    before, frozen, collected, kept = int(out[0]), int(out[1]), out[2], int(out[3])
    assert before == 0
    assert frozen >= 1000 + kept  # at least the kept nodes, and everything imported
    assert collected == "True"
