"""Merkle tree hashing, inclusion and consistency proofs (RFC 6962 §2.1, RFC 9162 §2.1).

Leaves are record lines without their trailing newline.  Hashes are raw 32-byte
SHA-256 digests throughout this module; callers hex-encode for display.

- ``MTH({}) = SHA-256()``                                    (RFC 9162 §2.1.1)
- ``MTH({d0}) = SHA-256(0x00 || d0)``                         leaf hash
- ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` with k the largest power of
  two smaller than n.

Proof generation takes a ``SubtreeHash`` callable returning ``MTH(D[lo:hi])`` so that a
caller can serve subtree hashes from storage (see ``pipeline.hot.tree``) instead of
holding all leaves in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from pipeline._accel import native
from pipeline.errors import PipelineError

HashFn = Callable[[int, int], bytes]
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(PipelineError, ValueError):
    """A proof failed to verify or its parameters are out of range."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, iteratively (no recursion depth concerns)."""
    if not hashes:
        return EMPTY_ROOT
    cr = CompactRange()
    for h in hashes:
        cr.append(h)
    return cr.root()


def root_from_leaves(leaves: Iterable[bytes]) -> bytes:
    return root_from_leaf_hashes([leaf_hash(x) for x in leaves])


class PyCompactRange:
    """Incremental tree state for leaves [0, size): one hash per set bit of ``size``.

    Appending is amortised O(1) hashing and the state is O(log n), as required for the
    writer: nothing already written is re-read.
    """

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None:
        if len(stack) != bin(size).count("1"):
            raise ValueError("compact range needs exactly one hash per set bit of size")
        self.size = size
        # hashes of perfect subtrees, largest (leftmost) first
        self._stack = list(stack)

    def append(self, lh: bytes) -> None:
        """Append one leaf hash (already ``leaf_hash``-ed)."""
        stack = self._stack
        n = self.size
        h = lh
        while n & 1:
            h = hashlib.sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        it = reversed(self._stack)
        h = next(it)
        for left in it:
            h = node_hash(left, h)
        return h

    @property
    def stack(self) -> list[bytes]:
        return list(self._stack)

    def copy(self) -> PyCompactRange:
        return PyCompactRange(self.size, self._stack)



# The C accelerator's CompactRange has the same interface and gives the same hashes (the
# equivalence is tested); it is used when built.  Type checkers see the Python class.
if TYPE_CHECKING:
    CompactRange = PyCompactRange
else:
    CompactRange = native.CompactRange if native is not None else PyCompactRange


def _subproof(m: int, lo: int, hi: int, b: bool, subtree: HashFn, out: list[bytes]) -> None:
    # RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b), iterative-friendly recursion depth log2(n)
    n = hi - lo
    if m == n:
        if not b:
            out.append(subtree(lo, hi))
        return
    k = _split(n)
    if m <= k:
        _subproof(m, lo, lo + k, b, subtree, out)
        out.append(subtree(lo + k, hi))
    else:
        _subproof(m - k, lo + k, hi, False, subtree, out)
        out.append(subtree(lo, lo + k))


def inclusion_proof(index: int, size: int, subtree: HashFn) -> list[bytes]:
    """Audit path for leaf ``index`` in a tree of ``size`` leaves, leaf-to-root order (RFC 6962 §2.1.1)."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    # walk down, then reverse so the sibling nearest the leaf comes first
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(old_size: int, size: int, subtree: HashFn) -> list[bytes]:
    """Consistency proof between tree sizes (RFC 6962 §2.1.2 PROOF(m, D[n]))."""
    if not 0 <= old_size <= size:
        raise ProofError(f"old size {old_size} must be between 0 and {size}")
    if old_size == 0 or old_size == size:
        return []
    out: list[bytes] = []
    _subproof(old_size, 0, size, True, subtree, out)
    return out


def verify_inclusion(index: int, size: int, leaf_h: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2.  Raises ProofError when the proof does not verify."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf_h
    for p in proof:
        if len(p) != 32:
            raise ProofError("proof hash is not 32 bytes")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    old_size: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2.  Raises ProofError when the proof does not verify."""
    if not 0 <= old_size <= size:
        raise ProofError(f"old size {old_size} must be between 0 and {size}")
    if old_size == size:
        if proof:
            raise ProofError("proof must be empty for equal sizes")
        if old_root != root:
            raise ProofError("equal sizes but different roots")
        return
    if old_size == 0:
        if proof:
            raise ProofError("proof must be empty from the empty tree")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    for p in proof:
        if len(p) != 32:
            raise ProofError("proof hash is not 32 bytes")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two: old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != root:
        raise ProofError("consistency proof does not lead to the new root")


def subtree_from_leaf_hashes(hashes: Sequence[bytes]) -> HashFn:
    """A ``HashFn`` over an in-memory list of leaf hashes (tests and small trees)."""

    def fn(lo: int, hi: int) -> bytes:
        return root_from_leaf_hashes(hashes[lo:hi])

    return fn
