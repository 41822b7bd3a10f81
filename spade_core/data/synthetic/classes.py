"""The landscape classes: their order (a contract with assets/labels/landscape.json and trained weights)."""

from __future__ import annotations

from spade_core.labels import LabelSet, get_label_set

LANDSCAPE_CLASSES: tuple[str, ...] = (
    "sky", "cloud", "mountain", "rock", "snow", "grass", "tree", "water", "sand", "road",
)
SKY, CLOUD, MOUNTAIN, ROCK, SNOW, GRASS, TREE, WATER, SAND, ROAD = range(len(LANDSCAPE_CLASSES))


def landscape_label_set() -> LabelSet:
    """The built-in "landscape" LabelSet, checked to list the classes in the order the renderer draws them."""
    label_set = get_label_set("landscape")
    if label_set.class_names != LANDSCAPE_CLASSES:
        raise ValueError(f"the 'landscape' label set lists classes {label_set.class_names} but the renderer draws "
                         f"{LANDSCAPE_CLASSES}: restore assets/labels/landscape.json to the renderer's class order")
    return label_set
