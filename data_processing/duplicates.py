"""Duplicates across and within splits, from `checks.Scan` rows: no check compares all pairs.

Exact duplicates are found on the decoded pixels, not the file bytes: sha256 of the RGB array
and its shape catches copies re-encoded with other settings or metadata, and costs nothing
extra because validate decodes every image anyway (the truncation check). They are grouped by
sorting their hashes. Near duplicates use a 64-bit perceptual hash (`imagehash.phash`)
compared by Hamming distance, looked up in a multi-index hash table (`near_pairs`). Lists of
problems are bounded (`max_listed` messages, `MAX_PAIRS` examples in validate.json); counts
are exact.
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from data_processing.checks import Scan, where

HASH_BITS = 64  # imagehash.phash with hash_size=8
MAX_PAIRS = 1000  # duplicate groups or near pairs of each kind kept in validate.json (all counted)
NAMED = 4  # files named in one duplicate-group message; the rest are counted
GROUP_FILES = 20  # files listed per duplicate group in validate.json; the rest are counted
CANDIDATES = 1 << 14  # candidate pairs verified at once in near_pairs: ~2 MB of arrays


def _listed(problems: list[str], total: int) -> list[str]:
    """The problems listed one by one, and one line counting the `total` minus those."""
    if total <= len(problems):
        return problems
    return problems + [f"... and {total - len(problems)} more of this kind"]


@dataclass(frozen=True)
class Groups:
    """Sets of two or more scan rows with identical pixels, ordered by their first row.

    Group g is rows[starts[g] : starts[g] + sizes[g]], its rows in file order.
    """

    rows: np.ndarray  # every scan row, sorted by sha256 (stable: file order within a hash)
    starts: np.ndarray
    sizes: np.ndarray
    cross: np.ndarray  # bool: the group spans two or more splits

    def __getitem__(self, g: int) -> np.ndarray:
        return self.rows[self.starts[g] : self.starts[g] + self.sizes[g]]


def find_exact_duplicates(scan: Scan) -> Groups:
    """Group identical pixels by sorting their sha256: O(N log N), no pairs ever formed."""
    rows = np.argsort(scan.sha256, kind="stable")
    if not len(rows):
        empty = np.zeros(0, np.intp)
        return Groups(rows, empty, empty, np.zeros(0, bool))
    digests, split = scan.sha256[rows], scan.split[rows]
    starts = np.flatnonzero(np.r_[True, digests[1:] != digests[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    cross = np.minimum.reduceat(split, starts) != np.maximum.reduceat(split, starts)
    dup = np.flatnonzero(sizes > 1)
    dup = dup[np.argsort(rows[starts[dup]])]  # a group's first row is its smallest: stable sort
    return Groups(rows, starts[dup], sizes[dup], cross[dup])


def _enumerate(names: list[str], more: int = 0) -> str:
    """'a', 'a and b', 'a, b and c', or 'a, b, c and 4 more'."""
    if more:
        return f"{', '.join(names)} and {more} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _pick(scan: Scan, rows: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Up to n of the rows, in row order, always the first of each split among them (so that
    a leakage message names a file in every split); and how many rows are left out."""
    firsts = rows[np.unique(scan.split[rows], return_index=True)[1]]
    rest = rows[~np.isin(rows, firsts)]
    chosen = np.sort(np.r_[firsts, rest[: max(0, n - len(firsts))]])
    return chosen, len(rows) - len(chosen)


def _split_counts(scan: Scan, rows: np.ndarray) -> dict[str, int]:
    counts = np.bincount(scan.split[rows], minlength=len(scan.splits))
    return {name: int(k) for name, k in zip(scan.splits, counts, strict=True) if k}


def _group_message(scan: Scan, rows: np.ndarray, cross: bool) -> str:
    chosen, more = _pick(scan, rows, NAMED)
    named = _enumerate([where(scan.images[r]) for r in chosen], more)
    counts = _split_counts(scan, rows)
    if not cross:
        return f"{named}: identical pixels within {next(iter(counts))} ({len(rows)} images)"
    spread = ", ".join(f"{k} in {name}" for name, k in counts.items())
    return (
        f"{named}: identical pixels in {_enumerate(list(counts))} ({len(rows)} images: "
        f"{spread}; exact duplicate: train/test leakage); keep copies in one split only"
    )


def _report_groups(
    scan: Scan, groups: Groups, cross: bool, max_listed: int
) -> tuple[list[str], list[dict], dict[str, int]]:
    """(messages, validate.json examples, counts) for the groups across splits or within one."""
    chosen = np.flatnonzero(groups.cross == cross)
    messages = [_group_message(scan, groups[g], cross) for g in chosen[:max_listed]]
    examples = []
    for g in chosen[:MAX_PAIRS]:
        files = [scan.images[r].file_name for r in _pick(scan, groups[g], GROUP_FILES)[0]]
        counts = _split_counts(scan, groups[g])
        examples.append({"images": int(groups.sizes[g]), "splits": counts, "files": files})
    counts = {"groups": len(chosen), "images": int(groups.sizes[chosen].sum())}
    return _listed(messages, len(chosen)), examples, counts


def _blocks(max_distance: int) -> list[tuple[np.uint64, np.uint64]]:
    """(shift, mask) of max_distance + 1 runs of bits, near-equal in length, covering a hash."""
    cuts = [HASH_BITS * k // (max_distance + 1) for k in range(max_distance + 2)]
    return [
        (np.uint64(lo), np.uint64((1 << (hi - lo)) - 1)) for lo, hi in itertools.pairwise(cuts)
    ]


def _matches(keys_a: np.ndarray, keys_b: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (i, j) with keys_a[i] == keys_b[j]: a sort-merge join, in chunks of about
    CANDIDATES pairs so that a big bucket never needs one big array."""
    order = np.argsort(keys_b, kind="stable")
    lo = np.searchsorted(keys_b[order], keys_a, "left")
    counts = np.searchsorted(keys_b[order], keys_a, "right") - lo
    ends, start = np.cumsum(counts), 0
    while start < len(keys_a):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + CANDIDATES, "right")))
        n = counts[start:stop]
        offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        yield np.repeat(np.arange(start, stop), n), order[np.repeat(lo[start:stop], n) + offsets]
        start = stop


def near_pairs(a: np.ndarray, b: np.ndarray, max_distance: int) -> np.ndarray:
    """Rows (i, j, distance) for every popcount(a[i] ^ b[j]) <= max_distance, closest first.

    Multi-index hashing: cut the 64 bits into max_distance + 1 blocks. By pigeonhole, two
    hashes at most max_distance bits apart agree exactly on at least one block, so only pairs
    that share a (block, value) bucket are verified, each at the first block they agree on
    (found once). Cost: the sum of bucket-size products, not len(a) x len(b).
    """
    found = [np.zeros((0, 3), np.int64)]
    if max_distance < 0 or not len(a) or not len(b):
        return found[0]
    blocks = _blocks(max_distance)
    for k, (shift, mask) in enumerate(blocks):
        for i, j in _matches((a >> shift) & mask, (b >> shift) & mask):
            xor = a[i] ^ b[j]
            distance = np.bitwise_count(xor).astype(np.int64)
            keep = distance <= max_distance
            for earlier_shift, earlier_mask in blocks[:k]:  # agreeing there: found there
                keep &= ((xor >> earlier_shift) & earlier_mask) != 0
            found.append(np.stack([i[keep], j[keep], distance[keep]], axis=1))
    pairs = np.concatenate(found)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0], pairs[:, 2]))]


def _identical_pairs(scan: Scan, s: int, t: int, hashes: np.ndarray) -> np.ndarray:
    """Per pHash in `hashes`: how many (split s, split t) image pairs with it are identical.

    Joins the two splits' sha256 counts (a sort, no pairs formed), then sums per pHash:
    identical pixels have identical pHashes, so one image of each sha256 gives its pHash.
    """
    rows_s, rows_t = np.flatnonzero(scan.split == s), np.flatnonzero(scan.split == t)
    sha_s, first, count_s = np.unique(scan.sha256[rows_s], return_index=True, return_counts=True)
    sha_t, count_t = np.unique(scan.sha256[rows_t], return_counts=True)
    _, i, j = np.intersect1d(sha_s, sha_t, assume_unique=True, return_indices=True)
    if not len(i):
        return np.zeros(len(hashes), np.int64)
    keys, inverse = np.unique(scan.phash[rows_s[first[i]]], return_inverse=True)
    sums = np.zeros(len(keys), np.int64)
    np.add.at(sums, inverse, count_s[i] * count_t[j])
    pos = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
    return np.where(keys[pos] == hashes, sums[pos], 0)


def find_near_duplicates(scan: Scan, max_distance: int) -> np.ndarray:
    """Rows (row_a, row_b, distance, image pairs) across splits, closest first.

    Identical pHashes within a split are collapsed first (one row per distinct pHash, with a
    count): 1,000 blank images are one hash, not 1,000 x 1,000 pairs. Each result row stands
    for every image pair with those two pHashes, less the pairs with identical pixels (exact
    duplicates, reported as such); row_a, row_b are the first images with the two pHashes.
    """
    found = [np.zeros((0, 4), np.int64)]
    classes = []
    for k in range(len(scan.splits)):
        rows = np.flatnonzero(scan.split == k)
        hashes, first, counts = np.unique(scan.phash[rows], return_index=True, return_counts=True)
        classes.append((hashes, rows[first], counts))
    for s, t in itertools.combinations(range(len(scan.splits)), 2):
        (hash_s, rep_s, count_s), (hash_t, rep_t, count_t) = classes[s], classes[t]
        i, j, distance = near_pairs(hash_s, hash_t, max_distance).T
        pairs = count_s[i] * count_t[j]
        if len(same := np.flatnonzero(distance == 0)):
            pairs[same] -= _identical_pairs(scan, s, t, hash_s[i[same]])
        table = np.stack([rep_s[i], rep_t[j], distance, pairs], axis=1)
        found.append(table[pairs > 0])
    table = np.concatenate(found)
    return table[np.lexsort((table[:, 1], table[:, 0], table[:, 2]))]


def _differing(scan: Scan, a: int, b: int) -> tuple[int, int]:
    """Rows with the split and pHash of rows a and b but different pixels (there are some).

    A near-duplicate row at distance 0 may start with two identical images; pick others.
    """
    if scan.sha256[a] != scan.sha256[b]:
        return a, b
    like_b = (scan.split == scan.split[b]) & (scan.phash == scan.phash[b])
    if len(other := np.flatnonzero(like_b & (scan.sha256 != scan.sha256[a]))):
        return a, int(other[0])
    like_a = (scan.split == scan.split[a]) & (scan.phash == scan.phash[a])
    return int(np.flatnonzero(like_a & (scan.sha256 != scan.sha256[b]))[0]), b


def _report_near(
    scan: Scan, near: np.ndarray, max_distance: int, max_listed: int
) -> tuple[list[str], list[dict]]:
    """(messages, validate.json examples) for the first near-duplicate rows."""
    messages, examples = [], []
    for a, b, distance, pairs in near[: max(max_listed, MAX_PAIRS)].tolist():
        a, b = _differing(scan, a, b)
        x, y = scan.images[a], scan.images[b]
        split_a, split_b = scan.splits[scan.split[a]], scan.splits[scan.split[b]]
        if len(messages) < max_listed:
            messages.append(
                f"{where(x)} and {where(y)}: near duplicates across {split_a} and {split_b} "
                f"(pHash Hamming distance {distance} <= {max_distance} of {HASH_BITS} bits)"
                + (
                    f"; {pairs} image pairs across the splits share these pHashes"
                    if pairs > 1
                    else ""
                )
            )
        if len(examples) < MAX_PAIRS:
            files, splits = [x.file_name, y.file_name], [split_a, split_b]
            examples.append(
                {"files": files, "splits": splits, "distance": distance, "pairs": pairs}
            )
    return _listed(messages, len(near)), examples


def check_leakage(
    scan: Scan, max_distance: int, max_listed: int
) -> tuple[list[str], list[str], dict]:
    """Return (errors, warnings, leakage) for duplicates across and within splits.

    Identical pixels in two splits are errors: the test score would measure memory, and users
    expect that to stop the pipeline. Near duplicates need a human look: warnings. Identical
    images within one split only skew the class weights: warnings. One message per group of
    identical images (not per pair), at most max_listed of each kind; every one is counted.
    """
    groups = find_exact_duplicates(scan)
    errors, exact, exact_counts = _report_groups(scan, groups, True, max_listed)
    within_warnings, within, within_counts = _report_groups(scan, groups, False, max_listed)
    near = find_near_duplicates(scan, max_distance)
    warnings, near_examples = _report_near(scan, near, max_distance, max_listed)
    counts = {f"exact_{k}": v for k, v in exact_counts.items()}
    counts |= {f"within_split_{k}": v for k, v in within_counts.items()}
    counts |= {"near_pairs": int(near[:, 3].sum()), "near_hash_pairs": len(near)}
    leakage = {
        "exact_hash": "sha256 of the decoded RGB pixels and their shape",
        "near_hash": f"imagehash.phash, {HASH_BITS} bits, Hamming distance <= {max_distance}",
        "counts": counts,
        "exact": exact,
        "near": near_examples,
        "within_split": within,
    }
    return errors, warnings + within_warnings, leakage
