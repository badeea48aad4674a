"""The Hopfield network: the notes' worked example exactly, energy descent, recall, capacity."""

import numpy as np
import pytest

from genlab.energy import Hopfield, binarize, capacity_curve, corrupt


def test_the_notes_example_weights_and_recall_hold_exactly():
    net = Hopfield(4).store([[-1, -1, -1, 1], [1, 1, 1, 1]])
    expected = np.array([[2, 2, 2, 0], [2, 2, 2, 0], [2, 2, 2, 0], [0, 0, 0, 2]]) / 4
    np.testing.assert_array_equal(net.weights, expected)
    np.testing.assert_array_equal(net.step_sync([-1, 1, 1, 1]), [1, 1, 1, 1])
    state, sweeps = net.recall([-1, 1, 1, 1], mode="sync")
    np.testing.assert_array_equal(state, [1, 1, 1, 1])
    for p in net.patterns:  # both stored patterns are fixed points
        np.testing.assert_array_equal(net.step_sync(p), p)


def test_energy_never_increases_under_asynchronous_updates():
    rng = np.random.default_rng(0)
    net = Hopfield(60).store(rng.choice([-1.0, 1.0], size=(12, 60)))
    s = rng.choice([-1.0, 1.0], size=60)
    order_rng = np.random.default_rng(1)
    energy = net.energy(s)
    for _ in range(5):
        for i in order_rng.permutation(60):  # neuron by neuron, checking after every single flip
            h = net.weights[i] @ s
            s[i] = 1.0 if h > 0 else (-1.0 if h < 0 else s[i])
            new = net.energy(s)
            assert new <= energy + 1e-12
            energy = new
    # the same holds for whole sweeps of the library's update, from many starts at once
    states = rng.choice([-1.0, 1.0], size=(20, 60))
    for _ in range(4):
        new_states = net.sweep_async(states, order_rng)
        assert np.all(net.energy(new_states) <= net.energy(states) + 1e-12)
        states = new_states


def test_a_lightly_loaded_network_recalls_corrupted_patterns():
    rng = np.random.default_rng(0)
    p = rng.choice([-1.0, 1.0], size=(5, 200))  # load 0.025, far below capacity
    net = Hopfield(200, zero_diagonal=True).store(p)
    final, _ = net.recall(corrupt(p, 0.2, seed=3))
    np.testing.assert_array_equal(final, p)
    assert np.allclose(np.diag(net.overlap(final)), 1.0)


def test_capacity_drops_past_the_classical_load():
    low, high = capacity_curve(300, [0.05, 0.3], trials=2, seed=0)
    assert low["recall_rate"] > 0.95 and low["mean_overlap"] > 0.98
    assert high["recall_rate"] < 0.2 and high["mean_overlap"] < 0.8


def test_bad_states_are_refused_with_a_sentence():
    net = Hopfield(4)
    with pytest.raises(ValueError, match="binarize"):
        net.store([[0.5, 1, 1, 1]])
    with pytest.raises(ValueError, match="4"):
        net.store([[1, 1, 1]])
    np.testing.assert_array_equal(binarize(np.array([[[0, 200], [128, 127]]], dtype=np.uint8)), [[-1, 1, 1, -1]])


def test_cli_stores_and_recalls_digits_and_refuses_bad_input(tmp_path, capsys):
    from genlab.cli import main

    out = tmp_path / "h.png"
    assert main(["hopfield", "--data", "digits", "--patterns", "2", "--corrupt", "0.1", "--out", str(out)]) == 0
    assert out.is_file() and "recalled exactly" in capsys.readouterr().out
    bad = tmp_path / "bad.png"
    assert main(["hopfield", "--data", "digits", "--corrupt", "1.5", "--out", str(bad)]) == 2
    assert "between 0 and 1" in capsys.readouterr().err and not bad.exists()
    assert main(["hopfield", "--data", "digits", "--patterns", "0", "--out", str(bad)]) == 2
    assert not bad.exists()


def test_cli_capacity_plot(tmp_path, capsys):
    from genlab.cli import main

    out = tmp_path / "cap.png"
    assert main(["hopfield", "--capacity", "--neurons", "60", "--trials", "1", "--out", str(out)]) == 0
    assert out.is_file() and "recall rate" in capsys.readouterr().out
