"""The papermill batch (on two tiny notebooks), cleaning, and the single-neuron demos and figures."""

from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib
import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook, new_output

from hebbkit import demos, viz, workbook
from hebbkit.cli import main
from hebbkit.data import ENV_VAR, synthetic_images
from hebbkit.rules import HPCA, Competitive, Hebb, Oja
from hebbkit.utils import expect_close

matplotlib.use("Agg")


def _notebook(*sources: str, parameters: str = "QUICK = True\nFIGURES = None"):
    nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]})])
    nb.cells += [new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_batch_injects_parameters_writes_outputs_and_reports_failures(tmp_path, capsys) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "out"
    folder.mkdir()
    nbformat.write(_notebook("print('quick', QUICK)", "open('made.txt', 'w').write(FIGURES)"), folder / "00_overview.ipynb")
    nbformat.write(_notebook("raise ValueError('broken on purpose')"), folder / "01_rules_and_losses.ipynb")
    with pytest.raises(RuntimeError, match="1 notebook.*01_rules_and_losses"):
        workbook.run_workbook(quick=True, out=out, notebooks=folder, only=["00", "01"])
    executed = nbformat.read(out / "00_overview.ipynb", as_version=4)
    assert any("quick True" in output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    assert (folder / "made.txt").read_text() == str((out / "figures").resolve())  # ran in its own folder; figures in out
    assert (out / "01_rules_and_losses.failed.ipynb").is_file()
    assert sorted(path.name for path in out.iterdir()) == ["00_overview.ipynb", "01_rules_and_losses.failed.ipynb",
                                                         "figures"]  # checked (so made) before any run
    printed = capsys.readouterr().out
    assert "[1/2] 00_overview ...\n[1/2] 00_overview: ok in" in printed
    assert "[2/2] 01_rules_and_losses: FAILED" in printed and "broken on purpose" in printed
    assert "workbook (quick): 1 ran, 0 skipped, 1 failed, in " in printed

    nbformat.write(_notebook("print('fixed')"), folder / "01_rules_and_losses.ipynb")
    workbook.run_workbook(quick=True, out=out, notebooks=folder, only=["01"])
    assert sorted(path.name for path in out.iterdir()) == ["00_overview.ipynb", "01_rules_and_losses.ipynb", "figures"]


def test_a_failing_cell_and_a_dead_kernel_are_named_and_the_run_exits_1(tmp_path, capsys) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "out"
    folder.mkdir()
    nbformat.write(_notebook("x = 1", "# a comment first\nraise ValueError('broken on purpose')", "print('never')"),
                   folder / "00_overview.ipynb")
    nbformat.write(_notebook("import os", "os._exit(1)  # the kernel dies", "print('never')"),
                   folder / "01_rules_and_losses.ipynb")
    nbformat.write(_notebook("print('fine')"), folder / "02_single_neuron.ipynb")
    code = main(["workbook", "--quick", "--notebooks", str(folder), "--out", str(out), "--only", "00", "01", "02"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    lines = captured.out.splitlines()
    # cells as the source notebook numbers them: the parameters cell, then the notebook's own
    assert any(line.startswith("[1/3] 00_overview: FAILED after ") and line.endswith(
        " s in cell 3 of 4 (`raise ValueError('broken on purpose')`): ValueError: broken on purpose") for line in lines)
    assert any(line.startswith("[2/3] 01_rules_and_losses: FAILED after ") and line.endswith(
        " s in cell 3 of 4 (`os._exit(1)  # the kernel dies`): the kernel died") for line in lines)
    assert any(line.startswith("[3/3] 02_single_neuron: ok in ") for line in lines)
    assert "workbook (quick): 1 ran, 0 skipped, 2 failed" in captured.out
    assert captured.err.endswith("hebbkit workbook: 2 notebook(s) failed: 00_overview, 01_rules_and_losses; see "
                                 f"{out}/NAME.failed.ipynb\n")
    assert sorted(path.name for path in out.iterdir()) == ["00_overview.failed.ipynb", "01_rules_and_losses.failed.ipynb",
                                                         "02_single_neuron.ipynb", "figures"]  # no .running copy
    kept = nbformat.read(out / "00_overview.failed.ipynb", as_version=4)
    (failing,) = [cell for cell in kept.cells if cell.get("outputs") and cell.outputs[0].get("ename")]
    assert failing.source.endswith("raise ValueError('broken on purpose')") and kept.cells[-1].outputs == []
    died = nbformat.read(out / "01_rules_and_losses.failed.ipynb", as_version=4)
    assert died.cells[-1].source == "print('never')" and died.cells[-1].execution_count is None  # the run stopped


def test_a_long_cell_gets_heartbeat_lines_naming_it(tmp_path, capsys) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "out"
    folder.mkdir()
    nbformat.write(_notebook("import time", "# waits\ntime.sleep(3)", "print('done')"), folder / "02_single_neuron.ipynb")
    workbook.run_workbook(quick=True, out=out, notebooks=folder, only=["02"], heartbeat=0.25)
    lines = capsys.readouterr().out.splitlines()
    beats = [line for line in lines if "running cell" in line]
    assert len(beats) >= 2 and all(line.startswith("[1/1] 02_single_neuron: ") for line in beats)
    assert any(line.endswith(" s") and "running cell 3 of 4 (`time.sleep(3)`) for " in line for line in beats)
    assert lines.index(beats[0]) > lines.index("[1/1] 02_single_neuron ...") and lines[-2].startswith("[1/1] 02_single_neuron: ok")
    with pytest.raises(ValueError, match="heartbeat must be a number > 0"):
        workbook.run_workbook(quick=True, out=out, notebooks=folder, only=["02"], heartbeat=0)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_make_lab_opens_jupyter_lab_on_the_notebooks_as_root_too(tmp_path) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / ".installed").touch()  # a stand-in environment: make -n prints the command without running it
    # --no-print-directory: under `make test` this make is a sub-make, which would add "Leaving directory" lines
    printed = subprocess.run(["make", "-n", "--no-print-directory", "lab", f"VENV={tmp_path}"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    flags = " --allow-root" if os.geteuid() == 0 else ""  # Jupyter refuses to start as root without it
    assert printed[-1].rstrip() == f"{tmp_path}/bin/jupyter lab notebooks/{flags}"
    assert "make lab" in (root / "README.md").read_text().split("## The workbook")[0]  # in the Quick start


def test_notebooks_that_need_missing_data_are_skipped_with_the_fix(tmp_path, capsys, monkeypatch) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "out"
    folder.mkdir()
    nbformat.write(_notebook("print('no data needed')"), folder / "02_single_neuron.ipynb")
    nbformat.write(_notebook("from hebbkit.data import load_data\ndata = load_data()"), folder / "03_conv_filters.ipynb")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.npz"))
    assert workbook.run_workbook(quick=True, out=out, notebooks=folder, only=["02", "03"]).keys() == {"02_single_neuron"}
    printed = capsys.readouterr().out
    assert (f"[2/2] 03_conv_filters: skipped: no usable CIFAR-10: no npz file at {tmp_path / 'absent.npz'}; to run it, "
            f"set {ENV_VAR}=PATH to a CIFAR-10 npz file, or pass --data PATH\n") in printed
    assert "workbook (quick): 1 ran, 1 skipped, 0 failed, in " in printed and "(skipped: 03_conv_filters)" in printed
    assert sorted(path.name for path in out.iterdir()) == ["02_single_neuron.ipynb", "figures"]


def test_store_outputs_keeps_figures_as_png_and_drops_widgets(tmp_path, capsys, monkeypatch) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    figure = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2))\n_ = ax.plot([0, 1])"
    widget = "# NBVAL_IGNORE_OUTPUT\nimport ipywidgets\nipywidgets.IntSlider()"
    nbformat.write(_notebook(figure, widget), folder / "00_overview.ipynb")
    nbformat.write(_notebook("from hebbkit.data import load_data\nload_data()"), folder / "03_conv_filters.ipynb")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.npz"))
    assert main(["workbook", "--store-outputs", "--notebooks", str(folder), "--only", "00", "03"]) == 0
    stored = nbformat.read(folder / "00_overview.ipynb", as_version=4)
    (shown,) = stored.cells[1].outputs
    assert shown.data["image/png"] and shown.data["text/plain"].startswith("<Figure size 200x200")
    assert stored.cells[2].outputs == [] and "widgets" not in stored.metadata
    assert workbook.clean(nbformat.read(folder / "00_overview.ipynb", as_version=4)) == stored
    assert "[2/2] notebooks/03_conv_filters.ipynb: not stored: no usable CIFAR-10" in capsys.readouterr().out.replace(str(tmp_path) + "/", "")
    assert nbformat.read(folder / "03_conv_filters.ipynb", as_version=4).cells[1].outputs == []


def test_select_keeps_workbook_order_and_rejects_unknown_names() -> None:
    assert workbook.select(None) == list(workbook.NOTEBOOKS)
    assert workbook.select(["02", "00_overview"]) == ["00_overview", "02_single_neuron"]
    with pytest.raises(ValueError, match="unknown notebook '07'"):
        workbook.select(["07"])


def test_cli_reports_a_missing_notebook_folder(tmp_path, capsys) -> None:
    assert main(["workbook", "--quick", "--notebooks", str(tmp_path / "nowhere")]) == 2
    assert "hebbkit workbook: error: notebook folder" in capsys.readouterr().err


def test_clean_keeps_figures_and_drops_widgets_and_run_metadata() -> None:
    nb = _notebook("x = 1", "# NBVAL_IGNORE_OUTPUT\nshow()")
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    nb.metadata["papermill"] = {"duration": 1.0}
    figure = new_output("display_data", data={"text/plain": "<Figure>", "image/png": "AAAA"}, metadata={"w": 1})
    nb.cells[1].outputs = [figure]
    widget = new_output("execute_result", data={"text/plain": "VBox()", "application/vnd.jupyter.widget-view+json": {}})
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="volatile"), widget]
    nb.cells[2].metadata["papermill"] = {"duration": 1.0}
    cleaned = workbook.clean(nb)
    assert set(cleaned.metadata) == {"kernelspec", "language_info"}
    assert cleaned.cells[1].outputs[0].data == {"text/plain": "<Figure>", "image/png": "AAAA"}
    assert cleaned.cells[1].outputs[0].metadata == {}
    assert [output.output_type for output in cleaned.cells[2].outputs] == ["stream"]
    assert cleaned.cells[0].metadata == {"tags": ["parameters"]} and cleaned.cells[2].metadata == {}


def test_clean_keeps_hidden_sources_collapsed() -> None:
    nb = _notebook("x = 1", "import torch")
    nb.cells[1].metadata.update({"jupyter": {"source_hidden": True, "outputs_hidden": False}, "tags": ["hide-input"],
                                 "papermill": {"duration": 1.0}, "execution": {"iopub.status.busy": "now"}})
    nb.cells[2].metadata["jupyter"] = {"source_hidden": False}
    cleaned = workbook.clean(nb)
    assert cleaned.cells[1].metadata == {"jupyter": {"source_hidden": True}, "tags": ["hide-input"]}
    assert cleaned.cells[2].metadata == {}
    assert workbook.clean(copy.deepcopy(cleaned)) == cleaned


def test_oja_converges_to_the_first_principal_axis_with_unit_norm() -> None:
    cloud = demos.gaussian_cloud(500, angle=30.0, seed=1)
    w = demos.learn(cloud, Oja(), torch.tensor([[0.2, 0.9]]), lr=0.01, steps=400, seed=1)[-1, 0]
    axis = torch.tensor([math.cos(math.radians(30)), math.sin(math.radians(30))])
    assert demos.angle_degrees(w, axis) < 3 and demos.angle_degrees(demos.principal_axis(cloud), axis) < 3
    assert w.norm().item() == pytest.approx(1.0, abs=0.02)


def test_winner_take_all_finds_the_cluster_centres_and_hot_soft_wta_collapses() -> None:
    points, labels = demos.clusters(600, seed=2)
    assert torch.bincount(labels).tolist() == [200, 200, 200]
    centres = demos.cluster_centres()
    wta = demos.learn(points, Competitive("wta"), demos.ring_init(3), lr=0.05, steps=400, seed=2)[-1]
    assert demos.nearest_distances(wta, centres).max() < 0.15
    assert demos.nearest_distances(centres, wta).max() < 0.15  # every centre is found, by a different unit
    hot = demos.learn(points, Competitive("soft", temperature=100.0), demos.ring_init(3), lr=0.05, steps=400, seed=2)[-1]
    assert (hot - points.mean(0)).norm(dim=1).max() < 0.3


def test_learn_is_seeded_and_stops_a_diverging_rule_at_inf() -> None:
    cloud = demos.gaussian_cloud(100, seed=3)
    first = demos.learn(cloud, Hebb(), torch.ones(1, 2), lr=0.1, steps=50, seed=4)
    assert first.shape == (51, 1, 2) and torch.equal(first, demos.learn(cloud, Hebb(), torch.ones(1, 2), lr=0.1, steps=50, seed=4))
    diverged = demos.learn(cloud, Hebb(), torch.ones(1, 2), lr=10.0, steps=200, seed=4)
    assert not torch.isfinite(diverged[-1]).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: demos.learn(torch.zeros(5, 2), Oja(), torch.ones(1, 2), lr=-1.0), "learning rate lr"),
        (lambda: demos.learn(torch.zeros(5, 2), Oja(), torch.ones(1, 2), lr=0.1, steps=-1), "steps must be >= 0"),
        (lambda: demos.learn(torch.zeros(5, 2), Oja(), torch.ones(1, 2), lr=0.1, batch_size=0), "batch_size >= 1"),
        (lambda: demos.gaussian_cloud(1), "num_points must be >= 2"),
        (lambda: demos.cluster_centres(0), "num_clusters must be >= 1"),
        (lambda: viz.log_slider("T", 5.0, 0.1, 1.0), "need 0 < low <= value <= high"),
        (lambda: viz.competition_figure(torch.zeros(5, 2), temperatures=(0.0,)), "temperature must be"),
    ],
)
def test_bad_input_is_named(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_check_exercise_waits_passes_and_fails(capsys) -> None:
    demos.check_exercise("E", None, lambda a: a == 2, "two")
    demos.check_exercise("E", 2, lambda a: a == 2, "two")
    assert capsys.readouterr().out == "E: not attempted yet (two)\nE: correct!\n"
    with pytest.raises(AssertionError, match="E: not yet right. Hint: two"):
        demos.check_exercise("E", 3, lambda a: a == 2, "two")


def test_figures_draw_and_save_small_pngs(tmp_path) -> None:
    cloud, (points, _) = demos.gaussian_cloud(200), demos.clusters(150)
    figures = {
        "oja.png": viz.oja_figure(cloud, steps=20),
        "hebb.png": viz.hebb_vs_oja_figure(cloud, steps=20),
        "competition.png": viz.competition_figure(points, temperatures=(0.1, 10.0), steps=20),
        "bars.png": viz.responsibilities_figure(torch.tensor([1.0, 0.5, 0.0])),
    }
    for name, fig in figures.items():
        viz.save_figure(fig, None, name)
        viz.save_figure(fig, tmp_path, name)
        path = tmp_path / name
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size < 100_000
    assert len(figures["competition.png"].axes) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(figures)  # no temp files left


def test_sliders_update_on_release_on_a_log_scale() -> None:
    slider = viz.log_slider("temperature T", 0.1, 1e-2, 1e2)
    assert (slider.min, slider.max, slider.base, slider.value) == (-2, 2, 10, pytest.approx(0.1))
    assert slider.continuous_update is False
    box = viz.interactive_figure(lambda temperature: viz.responsibilities_figure(torch.ones(2), (temperature,)), temperature=slider)
    assert box.children[0].children == (slider,)


def test_a_hebbian_conv_layer_with_hpca_finds_the_leading_patch_component() -> None:
    images = synthetic_images(64, 0, size=12, seed=5).train.float()
    filters = demos.train_conv_filters(images, HPCA("identity"), channels=1, kernel_size=3, lr=0.03, epochs=4, batch_size=8)
    components = demos.patch_principal_components(images, kernel_size=3, count=1)
    assert filters.shape == components.shape == (1, 3, 3, 3)
    assert torch.nn.functional.cosine_similarity(filters.flatten(), components.flatten(), 0).abs() > 0.99
    assert filters.norm().item() == pytest.approx(1.0, abs=0.02)


def test_unit_norm_filters_stay_unit_norm_and_draw() -> None:
    images = synthetic_images(16, 0, size=10, seed=6).train.float()
    filters = demos.train_conv_filters(images, Competitive("soft", temperature=0.1), channels=6, unit_norm=True, batch_size=4)
    assert torch.allclose(filters.flatten(1).norm(dim=1), torch.ones(6), atol=1e-5)
    assert len(viz.filters_row_figure({"a": filters, "b": -filters}, columns=3).axes) == 2
    with pytest.raises(ValueError, match="channels and batch_size must be >= 1"):
        demos.train_conv_filters(images, Competitive(), channels=0)


def test_expect_close_prints_a_line_free_of_the_measured_values(capsys) -> None:
    import pandas as pd

    table = pd.DataFrame({"L1": [17.8, 27.7], "L3": [13.7, 26.6]}, index=pd.Index([1.0, 10.0], name="regime"))
    expected = {"1.0 / L1": 17.0, "1.0 / L3": 15.0, "10.0 / L1": 30.0, "10.0 / L3": 25.0}
    expect_close("accuracy (%)", table, expected, 3.0)
    expect_close("accuracy (%)", table + 0.5, expected, 3.0)  # another CPU: the same line
    expect_close("norm", 1.004, 1.0, 0.01)
    assert capsys.readouterr().out == (
        "accuracy (%): all 4 values lie within ±3 of the expected\n" * 2 + "norm: the value lies within ±0.01 of the expected\n"
    )


@pytest.mark.parametrize(
    ("actual", "message"),
    [
        ({"hpca": 20.0, "vae": 18.5}, r"1 of 2 values differ by more than 3: hpca: 20 \(expected 27\.7\)"),
        ({"hpca": float("nan"), "vae": 18.0}, r"1 of 2 values differ by more than 3: hpca: nan"),
        ({"hpca": 27.0}, r"expected the entries \['hpca', 'vae'\], got these: \{'hpca': 27.0\}"),
    ],
)
def test_expect_close_fails_naming_what_is_off(actual, message) -> None:
    with pytest.raises(AssertionError, match=message):
        expect_close("accuracy (%)", actual, {"hpca": 27.7, "vae": 18.0}, 3.0)


def test_expect_close_needs_a_positive_tolerance() -> None:
    with pytest.raises(ValueError, match="tolerance must be a number > 0"):
        expect_close("x", 1.0, 1.0, 0)
