"""RFC 6962 reference vectors and property tests for pipeline.merkle.

The vectors are the Certificate Transparency test data as published in
github.com/transparency-dev/merkle: testonly/constants.go (LeafInputs, NodeHashes,
RootHashes) and proof/verify_test.go (inclusionProofs, consistencyProofs; there the leaf
numbers are 1-based, converted to 0-based indices here).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import merkle

LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                      "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [bytes.fromhex(h) for h in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
LEAF_HASHES = [bytes.fromhex(h) for h in [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]]


def h(x: str) -> bytes:
    return bytes.fromhex(x)


# (0-based index, tree size, proof)
INCLUSION = [
    (0, 8, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]
SUBTREE = merkle.subtree_from_leaf_hashes([merkle.leaf_hash(x) for x in LEAVES])


def test_leaf_hashes() -> None:
    assert [merkle.leaf_hash(x) for x in LEAVES] == LEAF_HASHES


@pytest.mark.parametrize("size", range(9))
def test_roots(size: int) -> None:
    assert merkle.root_from_leaves(LEAVES[:size]) == ROOTS[size]


def test_compact_range_roots() -> None:
    cr = merkle.CompactRange()
    assert cr.root() == ROOTS[0]
    for i, lh in enumerate(LEAF_HASHES):
        cr.append(lh)
        assert cr.root() == ROOTS[i + 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    assert merkle.inclusion_proof(index, size, SUBTREE) == proof
    merkle.verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    assert merkle.consistency_proof(old, new, SUBTREE) == proof
    merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_edge_cases_from_reference_suite() -> None:
    some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
    # index outside the tree, empty tree
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, size, some, [], ROOTS[0])
    # always consistent from 0; equal sizes need equal roots and an empty proof
    merkle.verify_consistency(0, 1, b"x", b"y", [])
    merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[1], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[2], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(2, 1, ROOTS[2], ROOTS[1], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(1, 2, ROOTS[1], ROOTS[2], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(0, 0, ROOTS[0], ROOTS[0], [ROOTS[0]])


def _tree(n: int) -> tuple[list[bytes], merkle.HashFn, bytes]:
    hashes = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
    return hashes, merkle.subtree_from_leaf_hashes(hashes), merkle.root_from_leaf_hashes(hashes)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), st.data())
def test_inclusion_property(ni: tuple[int, int], data: st.DataObject) -> None:
    n, i = ni
    hashes, sub, root = _tree(n)
    proof = merkle.inclusion_proof(i, n, sub)
    merkle.verify_inclusion(i, n, hashes[i], proof, root)
    if proof:  # any flipped bit in any hash is caught
        k = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[k] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(bad[k]))
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(i, n, hashes[i], bad, root)
    other = data.draw(st.integers(0, 2 * n + 1).filter(lambda j: j != i))
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(other, n, hashes[i], proof, root)
    # a different size, with the true root of that size (as a signed checkpoint would give);
    # sizes are bound to roots by the checkpoint signature, so this is the meaningful change
    other_n = data.draw(st.integers(i + 1, 2 * n + 2).filter(lambda m: m != n))
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(i, other_n, hashes[i], proof, _tree(other_n)[2])
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(i, n, bytes(32), proof, root)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))), st.data())
def test_consistency_property(mn: tuple[int, int], data: st.DataObject) -> None:
    m, n = mn
    hashes, sub, root = _tree(n)
    old_root = merkle.root_from_leaf_hashes(hashes[:m])
    proof = merkle.consistency_proof(m, n, sub)
    merkle.verify_consistency(m, n, old_root, root, proof)
    if m == n:
        return
    k = data.draw(st.integers(0, len(proof) - 1))
    bad = list(proof)
    bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(m, n, old_root, root, bad)
    other_m = data.draw(st.integers(1, n).filter(lambda x: x != m))
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(other_m, n, _tree(other_m)[2], root, proof)
    other_n = data.draw(st.integers(m + 1, 2 * n + 2).filter(lambda x: x != n))
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(m, other_n, old_root, _tree(other_n)[2], proof)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(m, n, root, old_root, proof)
