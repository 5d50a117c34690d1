"""``fastdrop explain``: the experiments' numbers (fastdrop.explain) and the command that prints
them.  Training experiments run with ``quick=True``; their assertions hold at that length.

No test asserts a number that a BLAS kernel decides: exact values come from explain's correctly
rounded norms and exactly rounded sums, values from training (BLAS matrix products) only meet
bounds, and the report is checked to read the same under two OpenBLAS kernels."""
import dataclasses
import importlib.util
import math
import os
import pathlib
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import fastdrop
from fastdrop import explain
from fastdrop.cli import build_parser, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Q = explain.KEEP_PROB


@pytest.fixture(scope="module")
def quick_report():
    """Every experiment once, with the short training: shared by the tests below (a few
    seconds in all)."""
    return explain.run(quick=True)


# 1. Why divide by keep_prob ------------------------------------------------------------------

def test_the_threads_matrix_and_norms():
    np.random.seed(42)
    A = np.random.randn(3, 4)  # exactly as in the thread
    assert np.array_equal(explain.thread_matrix(), A)
    result = explain.why_divide()
    assert result.keep_prob == 0.8
    # The thread's printed norms, which are the correctly rounded ones: every CPU gives them.
    assert result.norm_A == 2.672810732482017
    assert result.norm_scaled == 3.3410134156025215
    assert result.quotients[42.0] == 52.5
    assert result.quotients[-0.573] == pytest.approx(-0.71625, rel=1e-15)
    assert abs(result.quotients[-0.573]) > 0.573
    for norm, product in result.scalars.values():  # ||m A|| = |m| ||A||
        assert norm == pytest.approx(product, rel=1e-14)
    assert result.scalars[1.25][0] == 3.3410134156025215


def exactly_nearest(value: float, exact_square: Fraction) -> bool:
    """Whether `value` is the float nearest sqrt(exact_square): the square lies strictly
    between the squares of the midpoints to value's neighbours (a tie would need the root to
    fit in 54 bits, which the data below never give)."""
    below = (Fraction(math.nextafter(value, 0)) + Fraction(value)) / 2
    above = (Fraction(value) + Fraction(math.nextafter(value, math.inf))) / 2
    return below ** 2 < exact_square < above ** 2


def test_norms_are_correctly_rounded():
    """explain's norms are the float nearest the exact Frobenius norm, whatever the CPU: on the
    thread's matrix (where rounding the sum of squares and then its root gives
    2.6728107324820174) and on arrays of many sizes and scales."""
    A = explain.thread_matrix()
    assert math.sqrt(math.fsum(x * x for x in A.ravel().tolist())) != explain._norm(A)
    rng = np.random.default_rng(13)
    arrays = [A, A * (1 / Q), np.array([3.0, 4.0]), np.array([-2.5])]
    arrays += [rng.standard_normal(size) * 10.0 ** rng.integers(-150, 150)
               for size in rng.integers(1, 400, 200)]
    for a in arrays:
        exact_square = sum(Fraction(x) ** 2 for x in a.ravel().tolist())
        assert exactly_nearest(explain._norm(a), exact_square), a
    assert explain._norm(np.array([3.0, 4.0])) == 5.0
    assert explain._norm(np.array([-2.5])) == 2.5
    assert explain._norm(np.zeros((2, 3))) == 0.0


def test_one_dropout_mask_multiplies_the_kept_units_by_one_over_keep_prob_rounded_once():
    """B = A * (1/q) as in the thread, which is not A / q (3 elements differ in their last bit,
    one of them kept by this mask), is what fastdrop's kernel writes to the kept units, bit for
    bit."""
    result = explain.why_divide()
    kept = result.dropped != 0
    assert 0 < result.kept == np.count_nonzero(kept) < result.A.size
    assert result.kept_ratio == 1.25
    assert np.array_equal(result.scaled, result.A * (1 / Q))
    assert np.array_equal(result.dropped[kept], result.scaled[kept])
    assert not np.array_equal(result.dropped[kept], (result.A / Q)[kept])
    assert result.norm_dropped == pytest.approx(result.norm_dropped_unscaled / Q, rel=1e-14)


# 2. Expected output ----------------------------------------------------------------------------

def test_the_average_converges_to_A_like_one_over_sqrt_n():
    """A single run over 12 units: for this seed both fitted slopes lie in [-0.65, -0.35]
    (over 200 seeds, about 93 % of max-error slopes and 97 % of RMS slopes do)."""
    result = explain.expectation()
    assert result.counts == (10, 100, 1000, 10000)
    assert -0.65 <= result.slope <= -0.35
    assert -0.65 <= result.rms_slope <= -0.35
    assert result.max_error[-1] < result.max_error[0] / 10  # three decades: ideally / 31.6
    for measured, predicted in zip(result.rms_error, result.rms_predicted):
        assert predicted / 2.5 < measured < predicted * 2.5
    assert result.max_error[-1] < 0.05


def test_without_the_factor_the_average_tends_to_keep_prob_times_A():
    result = explain.expectation()
    assert result.ratio_unscaled == pytest.approx(Q, abs=0.01)
    assert result.max_error_unscaled[-1] < 0.03
    assert result.max_error_unscaled_to_A > 0.2  # far from A itself


def test_the_squared_norm_grows_by_one_over_keep_prob():
    result = explain.expectation()
    assert result.squared_norm_ratio == pytest.approx(1 / Q, rel=0.01)
    assert result.squared_norm_ratio_unscaled == pytest.approx(Q, rel=0.01)
    assert 1 < result.norm_ratio < 1 / Q  # Jensen: E||y|| < sqrt(E||y||^2)


# 3. Masks ----------------------------------------------------------------------------------------

def test_shared_mask_rows_are_equal_and_per_sample_rows_differ():
    result = explain.mask_sharing()
    for mask in (result.per_sample, result.shared):
        assert mask.shape == (6, 10)
        assert set(np.unique(mask).tolist()) == {0, 1}
    assert all(np.array_equal(row, result.shared[0]) for row in result.shared)
    assert result.distinct_rows_shared == 1
    assert result.distinct_rows_per_sample > 1
    assert not all(np.array_equal(row, result.per_sample[0]) for row in result.per_sample)
    assert (result.decisions_per_sample, result.decisions_shared) == (60, 10)


# 4. Classic against inverted -------------------------------------------------------------------

def test_classic_and_inverted_with_lr_times_q_squared_give_the_same_predictions(quick_report):
    result = quick_report.classic_vs_inverted
    assert result.keep_prob == Q and result.iterations > 0
    assert result.max_prediction_difference < 1e-6
    assert result.max_weight_difference < 1e-9
    assert result.accuracy_classic == result.accuracy_inverted
    assert result.final_loss_inverted == pytest.approx(result.final_loss_classic, rel=1e-9)
    assert result.accuracy_classic > 0.85  # it did learn


def test_with_equal_learning_rates_they_differ(quick_report):
    result = quick_report.classic_vs_inverted
    assert result.max_prediction_difference_equal_lr > 1e-2
    assert result.final_loss_inverted_equal_lr != pytest.approx(result.final_loss_classic,
                                                                rel=1e-3)


def test_the_gradient_of_the_weights_after_dropout_is_one_over_q_times_larger():
    """The derivation in classic_vs_inverted's docstring, one step at a time: from W' = q W,
    one step at lr leaves W' - q W = q lr (1 - 1/q**2) dL/dW, and lr q**2 leaves 0."""
    X, Y = explain.make_moons(40, 0.2, 0)
    sizes = (2, 8, 6, 1)
    classic = explain.MLP(sizes, 1, keep_prob=Q, mode="classic", mask_seed=2)
    start = {name: value.copy() for name, value in classic.params.items()}
    classic.step(X, Y, lr=1.0)
    for dropped_lr, equal in ((Q ** 2, True), (1.0, False)):
        inverted = explain.MLP(sizes, 1, keep_prob=Q, mode="inverted",
                               mask_seed=2).scale_dropped_weights(Q)
        inverted.step(X, Y, lr=1.0, dropped_lr=dropped_lr)
        for name in ("W1", "b1", "b2", "b3"):  # same gradients, same rate
            np.testing.assert_allclose(inverted.params[name], classic.params[name], atol=1e-12)
        for name in inverted.dropped_weights:
            assert np.allclose(inverted.params[name], Q * classic.params[name],
                               atol=1e-12) == equal
            if not equal:
                grad_classic = start[name] - classic.params[name]
                np.testing.assert_allclose(Q * start[name] - inverted.params[name],
                                           grad_classic / Q, atol=1e-12)


def test_classic_test_time_weight_scaling_is_fastdrops_classic_evaluation_mode():
    """The paper scales the weights after dropout by q at test time; fastdrop's classic mode
    scales the activations by q in evaluation instead: W (q a) = (q W) a."""
    X, _ = explain.make_moons(30, 0.2, 0)
    net = explain.MLP((2, 8, 6, 1), 3, keep_prob=Q, mode="classic")
    A = X
    for layer in (1, 2):
        Z = net.params[f"W{layer}"] @ A + net.params[f"b{layer}"]
        A, _ = fastdrop.dropout(np.maximum(Z, 0), Q, training=False, mode="classic")
    Z = net.params["W3"] @ A + net.params["b3"]
    np.testing.assert_allclose(net.predict_proba(X), 1 / (1 + np.exp(-Z)), rtol=1e-12)


def test_classic_and_inverted_networks_draw_the_same_masks():
    x = np.abs(np.random.default_rng(0).normal(size=(5, 7))) + 0.1
    masks = []
    for mode in ("classic", "inverted"):
        net = explain.MLP((2, 5, 3, 1), 0, keep_prob=0.5, mode=mode, mask_seed=9)
        y, _ = fastdrop.dropout(x, 0.5, mode=mode, stream=net.streams[0])
        masks.append(y != 0)
    assert np.array_equal(*masks)


# 5. Regularisation ------------------------------------------------------------------------------

def test_dropout_narrows_the_train_test_gap(quick_report):
    result = quick_report.regularisation
    assert result.gap_with < result.gap_without
    assert result.gap_without > 0.1  # the setup does overfit
    assert result.train_accuracy_without > result.train_accuracy_with  # fits the noise less
    assert result.test_accuracy_with > result.test_accuracy_without


# 6. Monte-Carlo dropout ---------------------------------------------------------------------

def test_test_time_is_deterministic_and_monte_carlo_dropout_is_not(quick_report):
    result = quick_report.monte_carlo
    assert result.deterministic_repeatable
    assert result.deterministic_std == 0.0
    assert result.mean_std > 0 and result.max_std > 0
    assert result.mean_std_uncertain > result.mean_std_confident
    net = quick_report.regularisation.with_dropout
    X = quick_report.regularisation.X_test[:, :50]
    positions = [stream.position for stream in net.streams]
    assert np.array_equal(net.predict_proba(X), net.predict_proba(X))
    assert [stream.position for stream in net.streams] == positions  # nothing drawn
    assert not np.array_equal(net.predict_proba(X, mc=True), net.predict_proba(X, mc=True))


def test_experiments_are_deterministic():
    first, second = explain.expectation(), explain.expectation()
    assert first == second
    a, b = explain.mask_sharing(), explain.mask_sharing()
    assert np.array_equal(a.per_sample, b.per_sample) and np.array_equal(a.shared, b.shared)
    assert np.array_equal(explain.why_divide().dropped, explain.why_divide().dropped)


# The report and the command ---------------------------------------------------------------------

def test_format_report_has_every_section_and_the_numbers(quick_report):
    text = explain.format_report(quick_report)
    positions = [text.index(title) for title in explain.SECTIONS]
    assert positions == sorted(positions)
    for number in ("2.67281073248202", "3.34101341560252", "52.5", "-0.71625", "1.25"):
        assert number in text
    assert "||A * (1/0.8)|| = 3.34101341560252" in text
    assert max(len(line) for line in text.splitlines()) <= explain.WIDTH


#: A number as the report prints it: digits with a decimal point, or in e-notation.
DECIMAL = re.compile(r"(?<![\w.])-?(\d+\.\d*|\d*\.\d+|\d+)(e[+-]?\d+)?(?![\w.])")


def significant_digits(number: str) -> int:
    mantissa = re.split("[eE]", number.lstrip("-"))[0].replace(".", "")
    return len(mantissa.lstrip("0")) if mantissa.strip("0") else 1


def test_every_number_is_printed_to_at_most_norm_digits(quick_report):
    """One format for the norms (the thread's 3.3410134156025215 once stood beside
    3.34101341560252): no number carries more significant digits than NORM_DIGITS, and the
    norm of A * (1/0.8) reads the same where it is printed twice."""
    text = explain.format_report(quick_report)
    numbers = [m.group(0) for m in DECIMAL.finditer(text)]
    assert "3.34101341560252" in numbers
    longest = max(numbers, key=significant_digits)
    assert significant_digits(longest) <= explain.NORM_DIGITS, longest
    printed = re.findall(r"\|\|A \* \(1/0.8\)\|\| = (\S+)|\|\|1.25 A\|\| = (\S+)", text)
    assert len({a or b for a, b in printed}) == 1, printed


def test_the_report_first_says_what_the_thread_and_the_course_are(quick_report):
    """One sentence, before the first section, and the first place either word appears."""
    text = explain.format_report(quick_report)
    introduction = " ".join(explain.INTRODUCTION.split())
    assert introduction.endswith(".") and ". " not in introduction  # one sentence
    assert introduction.startswith("The thread is ") and "(the course, " in introduction
    flowing = " ".join(text.split())
    start = flowing.index(introduction)
    assert start < flowing.index(explain.SECTIONS[0])
    for word in ("thread", "course"):
        assert flowing.lower().index(word) >= start, word


def test_rounding_errors_are_printed_as_a_bound(quick_report):
    """The classic/inverted differences of experiment 4 are rounding errors, whose digits vary
    with the CPU's BLAS kernels: the report gives a bound, and the number itself only when a
    difference is not a rounding error."""
    assert quick_report.classic_vs_inverted.max_prediction_difference < explain.ROUNDING_LEVEL
    text = explain.format_report(quick_report)
    assert f"classic - inverted| < {explain.ROUNDING_LEVEL:g} (max |W' - q W| after training < " \
           f"{explain.ROUNDING_LEVEL:g})" in " ".join(text.split())
    drifted = dataclasses.replace(quick_report.classic_vs_inverted,
                                  max_prediction_difference=0.00123)
    text = explain.format_report(dataclasses.replace(quick_report, classic_vs_inverted=drifted))
    assert "classic - inverted| = 0.00123 (max" in " ".join(text.split())


#: Instruction sets that OpenBLAS's kernels need, by their /proc/cpuinfo flags: OpenBLAS takes
#: OPENBLAS_CORETYPE at its word, so asking for kernels the CPU lacks would crash the process.
KERNEL_FLAGS = {"Haswell": {"avx2", "fma"},
                "SkylakeX": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}}

#: Prints the OpenBLAS kernels that NumPy loaded ("none" without OpenBLAS), then the report.
EXPLAIN_UNDER_THE_KERNEL = """
import ctypes, sys
import numpy  # loads NumPy's BLAS
with open("/proc/self/maps") as maps:
    paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]})
getters = [getattr(ctypes.CDLL(path), prefix + "_get_corename" + suffix, None) for path in paths
           for prefix in ("openblas", "scipy_openblas") for suffix in ("", "64_")]
getters = [getter for getter in getters if getter is not None]
if not getters:
    print("none")
    sys.exit()
getters[0].restype = ctypes.c_char_p
print(getters[0]().decode())
from fastdrop.cli import main
sys.exit(main(["explain", "--quick"]))
"""


def cpu_flags():
    with open("/proc/cpuinfo") as cpuinfo:
        return {flag for line in cpuinfo if line.startswith("flags")
                for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"),
                    reason="finding the loaded OpenBLAS needs Linux's /proc")
def test_the_report_reads_the_same_under_two_blas_kernels(tmp_path):
    """`fastdrop explain --quick` prints the same text under OpenBLAS's Haswell and SkylakeX
    kernels, which round NumPy's norm and matrix products differently (the variable is read
    when NumPy loads OpenBLAS: one process each), with the thread's norms."""
    missing = {core: flags - cpu_flags() for core, flags in KERNEL_FLAGS.items()}
    if any(missing.values()):
        pytest.skip(f"this CPU cannot run these OpenBLAS kernels: lacks {missing}")
    package_parent = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])
    # The two processes share the cores: one thread each (OpenBLAS's threads would spin).
    env = dict(os.environ, PYTHONPATH=package_parent, OPENBLAS_NUM_THREADS="1",
               FASTDROP_NUM_THREADS="1")
    processes = {core: subprocess.Popen(
        [sys.executable, "-c", EXPLAIN_UNDER_THE_KERNEL], cwd=tmp_path, text=True,
        env=dict(env, OPENBLAS_CORETYPE=core), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for core in KERNEL_FLAGS}
    outputs = {core: process.communicate(timeout=120) for core, process in processes.items()}
    reports = {}
    for core, (out, err) in outputs.items():
        assert processes[core].returncode == 0, err
        loaded, _, reports[core] = out.partition("\n")
        if loaded == "none":
            pytest.skip("NumPy's BLAS is not OpenBLAS")
        assert loaded.lower() == core.lower()  # OPENBLAS_CORETYPE was obeyed
    assert reports["Haswell"] == reports["SkylakeX"]
    lines = reports["Haswell"].splitlines()
    assert "    ||A||           = 2.67281073248202" in lines
    assert "    ||A * (1/0.8)|| = 3.34101341560252   = 1.25 x ||A||" in lines


@pytest.fixture
def cached_run(monkeypatch, quick_report):
    """`explain.run` returning the module's quick report, recording the `quick` it was given."""
    calls = []

    def run(quick=False):
        calls.append(quick)
        return quick_report

    monkeypatch.setattr(explain, "run", run)
    return calls


def test_cli_explain_prints_each_section(cached_run, capsys):
    assert main(["explain", "--quick"]) == 0
    assert cached_run == [True]
    out = capsys.readouterr().out
    assert out == explain.format_report(explain.run(quick=True)) + "\n"
    for title in explain.SECTIONS:
        assert title in out


def test_cli_explain_defaults():
    options = build_parser().parse_args(["explain"])
    assert options.quick is False and options.plot is None


needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason='matplotlib is not installed (pip install "fastdropout[plot]")')


def legend_texts(figure):
    return [text.get_text() for legend in figure.legends + [
        ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
        for text in legend.get_texts()]


@needs_matplotlib
def test_the_mask_figure_says_which_colour_is_dropped(quick_report):
    """The masks are drawn in grey levels, 1 (kept) white and 0 (dropped) black, and the
    legend says so with those colours."""
    from matplotlib.colors import to_rgba
    figure = explain.figures(quick_report)["masks.png"]
    legend = figure.legends[0]
    colours = {text.get_text(): to_rgba(handle.get_facecolor())
               for text, handle in zip(legend.get_texts(), legend.legend_handles)}
    assert colours == {"kept (1)": to_rgba("white"), "dropped (0)": to_rgba("black")}
    for ax in figure.axes:
        image = ax.get_images()[0]
        assert np.array_equal(image.get_array(), quick_report.mask_sharing.per_sample) or \
            np.array_equal(image.get_array(), quick_report.mask_sharing.shared)
        assert to_rgba(image.to_rgba(1.0)) == to_rgba("white")
        assert to_rgba(image.to_rgba(0.0)) == to_rgba("black")


@needs_matplotlib
def test_the_regularisation_figure_has_axis_labels_and_a_class_legend(quick_report):
    figure = explain.figures(quick_report)["regularisation.png"]
    for ax in figure.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
    texts = legend_texts(figure)
    for label in (0, 1):
        assert any(f"class {label}" in text and "training point" in text for text in texts)
        assert any(f"class {label}" in text and "region" in text for text in texts)


@needs_matplotlib
def test_the_monte_carlo_figure_draws_the_decision_boundary(quick_report):
    """The line drawn is where the test-time network of experiment 5 predicts p = 0.5: its
    probability at the line's points is 0.5, up to the contour's linear interpolation."""
    from matplotlib.contour import ContourSet
    figure = explain.figures(quick_report)["monte_carlo.png"]
    ax = figure.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    assert any("decision boundary" in text for text in legend_texts(figure))
    (contours,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert list(contours.levels) == [0.5]
    points = np.concatenate([path.vertices for path in contours.get_paths()])
    assert len(points) > 20
    probability = quick_report.regularisation.with_dropout.predict_proba(points.T)
    assert np.abs(probability - 0.5).max() < 0.05


@needs_matplotlib
def test_cli_explain_plot_writes_pngs(cached_run, tmp_path, capsys):
    directory = tmp_path / "figures"
    assert main(["explain", "--plot", str(directory)]) == 0
    out = capsys.readouterr().out
    assert f"plots written to {directory}" in out
    names = ("expectation.png", "masks.png", "regularisation.png", "monte_carlo.png")
    for name in names:
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_cli_explain_plot_without_matplotlib_fails_before_the_experiments(
        cached_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--plot", str(tmp_path / "figures")])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--plot" in err and 'pip install "fastdropout[plot]"' in err
    assert cached_run == [] and not (tmp_path / "figures").exists()


@pytest.mark.parametrize("argv, message", [
    (["explain", "--plot", "/nonexistent-dir/figures"], "--plot"),
    (["explain", "--no-such-option"], "unrecognized arguments"),
])
def test_cli_explain_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""


def test_cli_explain_plot_refuses_a_file(cached_run, tmp_path, capsys):
    path = tmp_path / "figure.png"
    path.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--plot", str(path)])
    assert exit_info.value.code == 2
    assert "is not a directory" in capsys.readouterr().err and cached_run == []
