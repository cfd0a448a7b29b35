"""clipcap/fiftyone_data.py: captions made from labels (counted, pluralised, in order of appearance), and labels
from detections falling back to classifications per sample, never negative ones."""

import pytest

from clipcap import fiftyone_data
from clipcap.data import PrepareError
from clipcap.fiftyone_data import captions_from_labels, counted, pluralize
from prepare_dataset import PrepareArguments
from tests.helpers import make_bad_corpus


def test_captions_from_detections_count_and_pluralise_in_order_of_appearance():
    labels = ["Refrigerator", "Microwave oven", "Home appliance", "Microwave oven"]
    assert captions_from_labels(labels) == [
        "a refrigerator and two microwave ovens",
        "a photo of a refrigerator and two microwave ovens",
        "a picture of a refrigerator and two microwave ovens",
        "an image showing a refrigerator and two microwave ovens",
    ]
    assert captions_from_labels(["Oven", "Toaster", "Kettle", "Toaster", "Toaster"])[1] == (
        "a photo of an oven, three toasters and a kettle"
    )


def test_captions_from_classifications_have_no_counts_and_generic_labels_only_when_alone():
    assert captions_from_labels(["Oven", "Oven", "Mechanical fan"], counts=False)[0] == "an oven and a mechanical fan"
    assert captions_from_labels(["Home appliance"])[0] == "a home appliance"
    assert captions_from_labels(["Home appliance", "Home appliance"])[0] == "two home appliances"
    assert captions_from_labels([]) == []


@pytest.mark.parametrize(
    "noun, plural",
    [("box", "boxes"), ("strawberry", "strawberries"), ("knife", "knives"), ("wine glass", "wine glasses"),
     ("coffeemaker", "coffeemakers"), ("toy", "toys"), ("dish", "dishes"), ("person", "people")],
)  # fmt: skip
def test_pluralize(noun, plural):
    assert pluralize(noun) == plural


def test_counted_articles_numbers_and_acronyms():
    assert [counted("oven", 1), counted("toaster", 1), counted("umbrella", 1), counted("unicycle", 1)] == [
        "an oven", "a toaster", "an umbrella", "a unicycle"
    ]  # fmt: skip
    assert [counted("oven", 10), counted("oven", 12)] == ["ten ovens", "12 ovens"]
    assert fiftyone_data.label_noun("Microwave oven") == "microwave oven"
    assert fiftyone_data.label_noun("TV") == "TV"


def test_labels_fall_back_from_detections_to_classifications_per_sample(fiftyone_db, tmp_path):
    """Open Images style: boxes where there are any, else the positive image-level labels; never negative ones."""
    import fiftyone as fo

    files = make_bad_corpus(tmp_path / "corpus")
    dataset = fo.Dataset("open-images-like", overwrite=True)
    box = [0.1, 0.1, 0.5, 0.5]
    dataset.add_samples(
        [
            fo.Sample(
                filepath=files["good.jpg"],
                ground_truth=fo.Detections(detections=[fo.Detection(label="Toaster", bounding_box=box)] * 2),
                positive_labels=fo.Classifications(classifications=[fo.Classification(label="Kitchen appliance")]),
                negative_labels=fo.Classifications(classifications=[fo.Classification(label="Kettle")]),
            ),
            fo.Sample(
                filepath=files["good.png"],
                ground_truth=fo.Detections(detections=[]),
                positive_labels=fo.Classifications(
                    classifications=[fo.Classification(label="Home appliance"), fo.Classification(label="Oven")]
                ),
                negative_labels=fo.Classifications(classifications=[fo.Classification(label="Kettle")]),
            ),
            fo.Sample(filepath=files["gray.png"], negative_labels=fo.Classifications(
                classifications=[fo.Classification(label="Kettle")])),
        ],
        progress=False,
    )  # fmt: skip
    columns, strategy = fiftyone_data.extract_records(dataset, PrepareArguments())
    assert columns["labels"] == [["Toaster", "Toaster"], ["Home appliance", "Oven"], []]
    assert columns["boxes"] == [[box, box], [], []]
    assert [c[1] if c else None for c in columns["captions"]] == [
        "a photo of two toasters", "a photo of an oven", None
    ]  # fmt: skip
    assert strategy.startswith(
        "made from the labels of 'ground_truth' (detections, counted), else 'positive_labels' (classifications), one"
    )
    only, _ = fiftyone_data.extract_records(dataset, PrepareArguments(label_field="positive_labels"))
    assert only["labels"] == [["Kitchen appliance"], ["Home appliance", "Oven"], []]
    with pytest.raises(PrepareError, match="--label_field filepath is not a Detections"):
        fiftyone_data.extract_records(dataset, PrepareArguments(label_field="filepath"))
