"""The LFW verification protocol: thresholds chosen on the other folds, accuracy on the held-out one, AUC and TAR."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from etlbench.errors import DatasetError
from etlbench.tasks import create_task
from etlbench.verification import best_threshold, lfw_protocol, pair_scores, pairs_of

if TYPE_CHECKING:
    from etlbench.trial import TrialSpec


def test_the_best_threshold_maximises_accuracy_between_distinct_scores() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    same = np.array([0, 0, 1, 0, 1, 1])
    t = best_threshold(scores, same)
    assert 0.2 < t < 0.3 or 0.6 < t < 0.7  # both leave one error; the lowest gap is taken
    assert t == pytest.approx(0.25)
    assert best_threshold(np.array([0.5, 0.5, 0.5]), np.array([1, 1, 0])) < 0.5  # ties: all "same", 2 of 3 right
    assert best_threshold(np.array([0.1, 0.2]), np.array([0, 0])) > 0.2  # nothing is "same"


def test_brute_force_agrees_on_random_pairs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        same = rng.integers(0, 2, 40)
        scores = np.round(rng.normal(same * 0.5, 1.0), 1)  # rounded: many ties
        t = best_threshold(scores, same)
        candidates = np.concatenate([[scores.min() - 1], np.unique(scores)])
        assert ((scores > t) == same).mean() == max(((scores > c) == same).mean() for c in candidates)


def test_each_fold_is_scored_at_the_threshold_of_the_other_folds() -> None:
    """Fold 1's pairs alone would choose a threshold near 0.85; the other folds choose about 0.5, and fold 1 is
    scored there: held-out accuracy, not the optimistic best threshold of the fold itself."""
    base_scores = np.array([0.2, 0.3, 0.4, 0.6, 0.7, 0.8])
    base_same = np.array([0, 0, 0, 1, 1, 1])
    odd_scores = np.array([0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    scores = np.concatenate([base_scores, base_scores, odd_scores])
    same = np.concatenate([base_same, base_same, base_same])
    folds = np.repeat([0, 2, 1], 6)
    result = lfw_protocol(scores, same, folds)
    assert result.fold_accuracy[0] == result.fold_accuracy[2] == 1.0
    assert result.fold_accuracy[1] == pytest.approx(0.5)  # at ~0.5, every pair of fold 1 is called "same"
    assert result.thresholds[1] == pytest.approx(0.5)
    assert result.accuracy == pytest.approx(2.5 / 3)
    assert result.accuracy_std == pytest.approx(np.std([1, 0.5, 1], ddof=1))


def test_auc_and_tar_at_far() -> None:
    same = np.array([1] * 5 + [0] * 2000)
    scores = np.concatenate([[0.9, 0.8, 0.7, 0.3, 0.2], np.linspace(0.0, 0.75, 2000)])
    result = lfw_protocol(scores, same, np.arange(len(same)) % 10)
    # FAR 1e-3 of 2,000 impostors is 2 accepted: the highest impostors score 0.75 and 0.7496; 0.8 and 0.9 pass
    assert result.tar_at_far == pytest.approx(0.4)
    pos, neg = scores[same == 1], scores[same == 0]
    assert result.auc == pytest.approx((pos[:, None] > neg[None, :]).mean())


def test_cosine_scores_ignore_scale() -> None:
    e = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(pair_scores(e, np.array([0, 0, 3]), np.array([1, 2, 0])), [1.0, 0.0, 0.0])


def test_bad_pairs_name_the_array() -> None:
    good = {"images": np.zeros((4, 8, 8, 1), np.uint8), "pair_a": np.array([0, 1]), "pair_b": np.array([2, 3]),
            "pair_same": np.array([1, 0]), "pair_fold": np.array([0, 1])}
    pairs_of(good, "x.npz")
    with pytest.raises(DatasetError, match=r"x.npz: a verification set needs arrays \['pair_fold'\]"):
        pairs_of({k: v for k, v in good.items() if k != "pair_fold"}, "x.npz")
    with pytest.raises(DatasetError, match=r"pair_b must hold row indices of 'images' \(0..3\)"):
        pairs_of({**good, "pair_b": np.array([2, 4])}, "x.npz")
    with pytest.raises(DatasetError, match="pair_same must be 0 or 1"):
        pairs_of({**good, "pair_same": np.array([1, 2])}, "x.npz")
    with pytest.raises(ValueError, match="not finite"):
        lfw_protocol(np.array([np.nan, 0.1]), np.array([1, 0]), np.array([0, 1]))


def _toy_set() -> dict[str, np.ndarray]:
    """4 folds of 2 pairs; identities never cross folds; image k shows identity k // 2."""
    images = np.arange(16, dtype=np.uint8).reshape(16, 1, 1, 1).repeat(8, 1).repeat(8, 2)
    a = np.array([0, 2, 4, 6, 8, 10, 12, 14])
    b = np.array([1, 3, 5, 7, 9, 11, 13, 15])
    return {"images": images, "identity": np.arange(16) // 2, "pair_a": a, "pair_b": b,
            "pair_same": np.ones(8, np.int64), "pair_fold": np.repeat([0, 1, 2, 3], 2)}


def test_splits_by_fold_keep_pairs_as_rows_of_their_own_images() -> None:
    from etlbench.verification import split_by_folds

    arrays = _toy_set()
    images, targets = split_by_folds(arrays, "toy.npz", train=(0, 1), val=(2,), test=(3,))
    assert [len(images[s]) for s in ("train", "val", "test")] == [8, 4, 4]
    assert targets["train"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # identities, renumbered from 0
    pairs = targets["test"]
    assert pairs.shape == (2, 4) and (pairs[:, 3] == 3).all()
    for row in pairs:  # each pair points at the images it named in the whole set
        assert images["test"][row[0], 0, 0, 0] in (12, 14) and images["test"][row[1], 0, 0, 0] in (13, 15)
    with pytest.raises(DatasetError, match=r"a fold is in two splits"):
        split_by_folds(arrays, "toy.npz", train=(0, 1), val=(1,), test=(3,))
    with pytest.raises(DatasetError, match=r"the test folds \[7\] must be some of the set's folds \[0, 1, 2, 3\]"):
        split_by_folds(arrays, "toy.npz", train=(0,), val=(1,), test=(7,))
    leaky = {**arrays, "identity": np.where(np.arange(16) == 15, 0, arrays["identity"])}  # fold 3 meets fold 0
    with pytest.raises(DatasetError, match="1 identities are in the train folds and in val or test"):
        split_by_folds(leaky, "toy.npz", train=(0, 1), val=(2,), test=(3,))


def test_lfw_folds_are_identity_disjoint_in_both_halves(real_data_root) -> None:
    from etlbench.verification import split_by_folds

    arrays = dict(np.load(real_data_root / "lfw_pairs" / "lfw_pairs_64.npz"))
    tested = []
    for half in ("verification", "verification_reverse"):  # split_by_folds refuses an identity in train and test
        images, targets = split_by_folds(arrays, "lfw_pairs", **create_task(half).folds)
        assert len(targets["test"]) == 3000 and targets["test"][:, 2].sum() == 1500
        assert len(images["train"]) + len(images["val"]) + len(images["test"]) == 7701
        tested += np.unique(targets["test"][:, 3]).tolist()
    assert sorted(tested) == list(range(10))  # the two halves test every fold once


def test_an_epoch_ends_with_its_remainder_unless_that_is_one_image() -> None:
    """verification_reverse trains on 3,105 images, 1 more than 97 batches of 32: trained alone, that image
    failed every trial in batch norm (a 1x1 map of one image has no batch statistics)."""
    import itertools

    from etlbench.train import _batches

    for name, n, sizes in [("verification_reverse", 33, [32, 32, 32]), ("gender", 33, [32, 32, 32]),
                           ("verification_reverse", 34, [32, 2, 32, 2])]:
        targets = np.arange(n) // 3 if name.startswith("verification") else np.zeros(n, np.int64)
        batches = list(itertools.islice(_batches(create_task(name), targets, 32, np.random.default_rng(0)), len(sizes)))
        assert [len(b) for b in batches] == sizes, name
        assert all(len(set(b.tolist())) == len(b) for b in batches)


def test_training_batches_hold_two_images_of_an_identity_where_it_has_two() -> None:
    import torch

    from etlbench.tasks import create_task

    task = create_task("verification")
    identities = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4])
    order = np.random.default_rng(0).permutation(len(identities))
    grouped = task.batch_order(order, identities)
    assert sorted(grouped.tolist()) == list(range(len(identities)))  # a reordering, nothing lost
    units = grouped.reshape(-1, 2) if len(grouped) % 2 == 0 else grouped[:-1].reshape(-1, 2)
    same = [identities[a] == identities[b] for a, b in units]
    assert sum(same) == 4  # identity 0 gives one pair, 2 one, 4 two; the odd ones pair up with each other
    first = {i: int(np.flatnonzero(order == i)[0]) for i in range(len(identities))}
    assert [first[u[0]] for u in units] == sorted(first[u[0]] for u in units)  # in the permutation's order
    assert np.array_equal(create_task("gender").batch_order(order, identities), order)  # others: unchanged

    e = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    # same identities coincide; different ones are sqrt(2) > margin 1 apart
    assert task.loss(e, y).item() == pytest.approx(0, abs=1e-12)
    near = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    loss = task.loss(near, torch.tensor([0, 0, 1]))
    n = torch.nn.functional.normalize(near, dim=1)
    d01, d02, d12 = (n[0] - n[1]).norm(), (n[0] - n[2]).norm(), (n[1] - n[2]).norm()
    expected = d01**2 + ((1 - d02).clamp(min=0) ** 2 + (1 - d12).clamp(min=0) ** 2) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_etls_ablations_are_refused_for_verification_before_anything_runs() -> None:
    """ETL itself runs on verification; its cut ablations would be plain uniform and Taylor there (nothing is cut)."""
    from etlbench.config import SpecError, parse_spec

    assert parse_spec({"tasks": {"verification": {"dataset": "synthetic"}}, "methods": ["magnitude", "etl"],
                       "compressions": [4]}).methods
    for ablation in ("etl-cut-uniform", "etl-cut-taylor", "etl-transfer"):
        with pytest.raises(SpecError, match=rf"method '{ablation}' does not apply to task 'verification'"):
            parse_spec({"tasks": {"verification": {"dataset": "synthetic"}}, "methods": [ablation],
                        "compressions": [4]})


def test_a_verification_probe_fits_pairs_and_scores_pairs_of_people_it_did_not_fit() -> None:
    from etlbench.probe import PAIRS_PER_IDENTITY, identity_pairs, probe_view

    identities = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4, 4, 4, 5])  # grouped, as ETL's probe subset is
    view = probe_view(create_task("verification"), identities, 7, seed=0)  # the 7th image is identity 3's first
    a, b = view.pairs
    fit, held = slice(0, view.n_fit), slice(view.n_fit, None)
    assert view.task.kind == "classification" and view.task.higher_is_better
    assert set(a[fit]) | set(b[fit]) <= set(range(7))
    held_people = set(identities[a[held]]) | set(identities[b[held]])
    assert held_people == {4, 5}  # identity 3 is fitted (its first image), so its other one is not held out
    assert np.array_equal(view.targets, (identities[a] == identities[b]).astype(int))
    same_fit = {tuple(sorted(p)) for p, s in zip(zip(a[fit], b[fit], strict=True), view.targets[fit], strict=True)
                if s}
    assert same_fit == {(0, 1), (0, 2), (1, 2), (3, 4)}  # every same-identity pair, and as many different ones
    assert view.targets[fit].mean() == view.targets[held].mean() == 0.5
    x = np.arange(24.0).reshape(12, 2)
    assert np.array_equal(view.features(x), np.abs(x[a] - x[b]))
    with pytest.raises(ValueError, match=r"held-out part of a verification probe .* needs an identity with two"):
        probe_view(create_task("verification"), np.array([0, 0, 1, 2, 3]), 3, seed=0)
    ids = np.repeat([0, 1], [12, 2])  # 66 pairs of identity 0: at most PAIRS_PER_IDENTITY of them, all different
    a, b, same = identity_pairs(ids, np.arange(14), np.random.default_rng(0))
    assert same.sum() == PAIRS_PER_IDENTITY + 1 == len({(i, j) for i, j, s in zip(a, b, same, strict=True) if s})
    gender = probe_view(create_task("gender"), identities, 7, seed=0)  # other tasks: the samples themselves
    assert gender.pairs is None and np.array_equal(gender.split(x)[0], x[:7])


def test_etls_probe_subset_is_whole_identities_on_verification_and_unchanged_elsewhere() -> None:
    """On verification: identities grouped, held-out pairs of people the fit never saw. On other tasks: the seeded
    permutation and the first ``1 - holdout`` fitting, as before verification had a probe."""
    from types import SimpleNamespace

    from etlbench.methods.etl import ETL

    rng = np.random.default_rng(3)
    identities = rng.integers(0, 40, 300)
    images = np.arange(300)[:, None]  # an image is its own row number
    etl = ETL(probe_samples=200, holdout=0.25)
    for name in ("verification", "gender"):
        ctx = SimpleNamespace(seed=5, data=SimpleNamespace(task=create_task(name), images={"train": images},
                                                           targets={"train": identities}))
        rows, y = etl._probe_subset(ctx)
        view = etl._view(ctx, y)
        if name == "gender":
            expected = np.random.default_rng(5).permutation(300)[:200]
            assert np.array_equal(rows[:, 0], expected) and view.pairs is None and view.n_fit == 150
            continue
        assert len(rows) == 200 and np.array_equal(y, identities[rows[:, 0]])
        assert all(len(set(np.flatnonzero(y == i))) == np.ptp(np.flatnonzero(y == i)) + 1 for i in set(y))  # grouped
        a, b = view.pairs
        fit_people = set(y[a[: view.n_fit]]) | set(y[b[: view.n_fit]])
        held_people = set(y[a[view.n_fit :]]) | set(y[b[view.n_fit :]])
        assert fit_people and held_people and not fit_people & held_people
        assert a[view.n_fit :].min() >= 150 and b[view.n_fit :].min() >= 150


def test_etls_verification_probe_reads_the_filters_that_tell_people_apart() -> None:
    """Filter 0 holds a per-person value, filters 1 and 2 noise of different scales: the probe of same-person pairs
    weighs filter 0 most (ETL's importance, the norm of its standardised coefficient)."""
    from etlbench.methods.etl import _coefficient_norms
    from etlbench.probe import probe_view

    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(60), 4)
    person = rng.normal(size=60)[identities]
    x = np.stack([person + 0.05 * rng.normal(size=240), rng.normal(size=240), rng.normal(size=240) * 3], 1)
    view = probe_view(create_task("verification"), identities, 180, seed=0)
    norms = _coefficient_norms(view.task, *view.split(x)[:2], seed=0, strength=1.0)
    assert norms[0] > 5 * max(norms[1], norms[2])


def tiny_verification_trial(method: str, max_train: int, seed: int, steps: int) -> TrialSpec:
    """A 4x trial of ``method`` on synthetic verification, with a one-epoch baseline and ``steps`` of recovery."""
    from dataclasses import replace

    from etlbench.train import TrainConfig
    from etlbench.transfer import TransferSpec
    from etlbench.trial import RECOVERY, TrialSpec

    setting = TransferSpec(task="verification", dataset="synthetic", max_train=max_train, seed=seed,
                           train=TrainConfig(epochs=1, batch_size=16, precision="fp32")).resolved()
    return TrialSpec(setting, method=method, compression=4,
                     recovery=replace(RECOVERY, max_steps=steps, batch_size=16, precision="fp32"))


@pytest.mark.slow
def test_a_verification_trial_prunes_the_trunk_and_keeps_the_embedding(tmp_path) -> None:
    """On synthetic faces: the transfer baseline, its floor (the frozen source's own embedding, nothing trained)
    and a pruned model whose embedding keeps its 128 dimensions, scored by the LFW protocol."""
    from dataclasses import replace

    import torch

    from etlbench.trial import baseline_model, train_trial

    spec = tiny_verification_trial("taylor", max_train=64, seed=1, steps=2)
    row, model = train_trial(spec, tmp_path)
    assert row["status"] == "trained", row.get("error")
    assert 0.4 < row["metric"] <= 1 and 0 < row["metrics"]["auc"] <= 1 and "accuracy_std" in row["metrics"]
    assert row["linear_probe_metric"] is not None and row["retention"] == pytest.approx(
        row["metric"] / row["baseline_metric"])
    unpruned = row["baseline_metrics"]  # the unpruned baseline's fold spread and AUC, for the ten-fold report
    assert unpruned["accuracy"] == row["baseline_metric"] and {"accuracy_std", "auc"} <= set(unpruned)
    base = baseline_model(spec, tmp_path)
    assert sum(p.numel() for p in model.parameters()) < 0.4 * sum(p.numel() for p in base.parameters())
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 112, 112)).shape == base(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    by_identity = replace(spec, recovery=replace(spec.recovery, objective="identity"))
    row_identity, model_identity = train_trial(by_identity, tmp_path)
    assert row_identity["status"] == "trained" and by_identity.trial_id != spec.trial_id
    assert model_identity.state_dict().keys() == model.state_dict().keys()  # the classifier is not kept


@pytest.mark.slow
def test_etl_prunes_a_verification_network_from_same_person_probes_without_cutting_it(tmp_path) -> None:
    """On synthetic faces: ETL probes the frozen source with same-person pairs, keeps the whole trunk for the
    embedding and prunes its width to the budget, or (``auto``) to the fraction its probes choose."""
    from dataclasses import replace

    import torch

    from etlbench.backbones import create_backbone
    from etlbench.trial import baseline_model, train_trial

    spec = tiny_verification_trial("etl", max_train=96, seed=0, steps=1)
    last = create_backbone("dlib-resnet29").cut_points()[-1].name
    row, model = train_trial(spec, tmp_path)
    assert row["status"] == "trained", row.get("error")
    assert row["cut_layer"] == last and row["probe_samples"] == 96  # every train image: whole identities
    assert 0.5 <= row["probe_cut_score"] <= 1  # the last block's held-out same-person accuracy
    base = sum(p.numel() for p in baseline_model(spec, tmp_path).parameters())
    assert sum(p.numel() for p in model.parameters()) < 0.3 * base
    auto, auto_model = train_trial(replace(spec, compression=None), tmp_path)
    assert auto["status"] == "trained" and auto["cut_layer"] == last and 0 < auto["kept_fraction"] <= 1
    assert sum(p.numel() for p in auto_model.parameters()) <= base
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 112, 112)).shape == auto_model(torch.zeros(2, 3, 112, 112)).shape == (2, 128)


def test_identity_recovery_trains_a_classifier_beside_the_embedding_only_for_verification() -> None:
    from types import SimpleNamespace

    from etlbench.backbones import create_backbone
    from etlbench.tasks import create_task
    from etlbench.train import TrainConfig, TrainingError, build_task_model, identity_classifier

    source = create_backbone("dlib-resnet29")
    images, identities = np.zeros((6, 64, 64, 3), np.uint8), np.array([0, 0, 1, 2, 2, 3])
    for name, kind_ok in (("verification", True), ("gender", False)):
        task = create_task(name)
        model = build_task_model(source, task, identities % 2)
        data = SimpleNamespace(task=task, images={"train": images}, targets={"train": identities})
        assert identity_classifier(model, data, source.preprocess, (112, 112), TrainConfig()) is None
        if kind_ok:
            classifier = identity_classifier(model, data, source.preprocess, (112, 112),
                                             TrainConfig(objective="identity"))
            assert (classifier.in_features, classifier.out_features) == (128, 4)
        else:
            with pytest.raises(TrainingError, match="objective 'identity' trains verification embeddings"):
                identity_classifier(model, data, source.preprocess, (112, 112), TrainConfig(objective="identity"))
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="siamese")


def test_the_report_names_verifications_floor_as_what_it_is() -> None:
    from etlbench.report.leaderboard import floor_name

    assert floor_name("verification") == "frozen source embedding (untrained)"
    assert floor_name("gender") == floor_name("a-task-not-installed") == "frozen linear probe"


def test_the_page_says_which_folds_each_verification_half_trains_and_tests_on() -> None:
    from etlbench.report.leaderboard import split_note

    assert split_note("verification") == "folds 0-3 train, 4 val, 5-9 test (one half of a two-half protocol)"
    assert split_note("verification_reverse") == "folds 5-8 train, 9 val, 0-4 test (one half of a two-half protocol)"
    assert split_note("gender") == split_note("a-task-not-installed") == ""
