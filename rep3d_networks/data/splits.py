"""Seeded train/validation/test splits.

* AMOS: one fixed split with the paper's sizes (CT 160/20/20, MRI 22/4/7). Smaller sets (phantoms,
  partial downloads) are split with the same proportions, keeping at least one validation and one
  test case.
* KiTS21 and MSD: 5-fold cross-validation with the paper's 80/10/10 split. The cases are shuffled once
  and cut into 5 chunks; fold ``k`` holds out chunk ``k`` (20 %), half of it for validation and half for
  testing, and trains on the other four chunks (80 %). Every case is held out by exactly one fold and the
  5 test sets are disjoint. A chunk of a single case (fewer than 10 cases in all) cannot be halved: that
  fold tests on it and validates on half of chunk ``k+1`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Mapping, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Split:
    """Case ids of one split."""

    training: Tuple[str, ...]
    validation: Tuple[str, ...]
    test: Tuple[str, ...]


def shuffled(case_ids: Sequence[str], seed: int) -> List[str]:
    """Return the sorted ids in a seeded random order (independent of the input order)."""
    ordered = sorted(case_ids)
    if len(set(ordered)) != len(ordered):
        raise ValueError("case ids must be unique")
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in permutation]


def fixed_split_sizes(num_cases: int, target_sizes: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Sizes of a fixed split for ``num_cases`` cases.

    Args:
        num_cases: Number of available cases.
        target_sizes: ``(train, val, test)`` sizes when enough cases exist.

    Returns:
        ``target_sizes`` if ``num_cases >= sum(target_sizes)`` (extra cases stay unused), otherwise
        sizes in the same proportions with at least one validation and one test case.

    Raises:
        ValueError: If fewer than 3 cases are available.
    """
    if num_cases >= sum(target_sizes):
        return target_sizes
    if num_cases < 3:
        raise ValueError(f"a train/validation/test split needs at least 3 cases, found {num_cases}")
    total = sum(target_sizes)
    num_val = max(1, round(num_cases * target_sizes[1] / total))
    num_test = max(1, round(num_cases * target_sizes[2] / total))
    num_train = num_cases - num_val - num_test
    if num_train < 1:
        num_val, num_test, num_train = 1, 1, num_cases - 2
    return num_train, num_val, num_test


def fixed_split(
    case_ids: Sequence[str], target_sizes: Tuple[int, int, int], seed: int
) -> Tuple[Split, Tuple[str, ...]]:
    """Seeded fixed split (AMOS).

    Returns:
        The split and the ids left unused (only when more cases exist than ``sum(target_sizes)``).
    """
    order = shuffled(case_ids, seed)
    num_train, num_val, num_test = fixed_split_sizes(len(order), target_sizes)
    split = Split(
        training=tuple(sorted(order[:num_train])),
        validation=tuple(sorted(order[num_train : num_train + num_val])),
        test=tuple(sorted(order[num_train + num_val : num_train + num_val + num_test])),
    )
    unused = tuple(sorted(order[num_train + num_val + num_test :]))
    return split, unused


def kfold_splits(case_ids: Sequence[str], num_folds: int, seed: int) -> List[Split]:
    """Seeded k-fold cross-validation splits (KiTS, MSD); see the module docstring.

    Raises:
        ValueError: If ``num_folds < 2`` or there are too few cases for every fold to have
            at least one training, validation and test case.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    minimum = max(num_folds, 3)
    if len(case_ids) < minimum:
        raise ValueError(f"{num_folds}-fold cross-validation needs at least {minimum} cases, found {len(case_ids)}")
    chunks = [list(chunk) for chunk in np.array_split(np.array(shuffled(case_ids, seed), dtype=object), num_folds)]
    splits = []
    for fold in range(num_folds):
        held_out_chunk = chunks[fold]
        if len(held_out_chunk) >= 2:
            validation, test = held_out_chunk[: len(held_out_chunk) // 2], held_out_chunk[len(held_out_chunk) // 2 :]
        else:
            next_chunk = chunks[(fold + 1) % num_folds]
            test, validation = held_out_chunk, next_chunk[: max(1, len(next_chunk) // 2)]
        held_out = set(test) | set(validation)
        training = [case for chunk in chunks for case in chunk if case not in held_out]
        if not training:
            raise ValueError(f"fold {fold} has no training case; use more cases or fewer folds")
        splits.append(Split(tuple(sorted(training)), tuple(sorted(validation)), tuple(sorted(test))))
    return splits


def class_aware_split(classes_per_case: Mapping[str, Iterable[int]]) -> Split:
    """One validation and one test case whose classes the training cases all hold (slabs of one volume).

    A seeded random split of a few z-slabs can hold out the only slabs holding some organ (the pelvic slabs of the
    shared CT), so that nothing is learnt that the held-out slabs could measure. This split picks the test case with
    the most classes, then the validation case with the most classes, such that every class of either is present in
    at least one remaining (training) case; ties go to the case id that sorts first.

    Args:
        classes_per_case: Foreground class ids present in each case.

    Raises:
        ValueError: If fewer than 3 cases are given or no such pair exists.
    """
    classes = {case: frozenset(int(c) for c in values) for case, values in classes_per_case.items()}
    if len(classes) < 3:
        raise ValueError(f"a train/validation/test split needs at least 3 cases, found {len(classes)}")
    best = None
    for test in sorted(classes):
        for validation in sorted(set(classes) - {test}):
            training = [case for case in sorted(classes) if case not in (test, validation)]
            seen = frozenset().union(*(classes[case] for case in training))
            if (classes[test] | classes[validation]) <= seen:
                score = (len(classes[test]), len(classes[validation]))
                if best is None or score > best[0]:
                    best = (score, Split(tuple(training), (validation,), (test,)))
    if best is None:
        raise ValueError(f"no validation/test pair whose classes all appear in the training cases: {dict(classes)}")
    return best[1]
