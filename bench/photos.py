"""A labelled natural-image task for the ImageNet-shaped benchmark models, built offline.

The classes are twelve photographs bundled with scikit-image and scikit-learn;
an example is a random square crop of one of them, resized to 224x224, and its
label is the photograph it came from. Training and calibration crops come from
the left 60% of each photograph, held-out crops from the right 40%, so no
held-out pixel was seen in training.

The ResNet-50- and VGG-16-shaped networks keep their seeded random backbones;
``fit_head`` trains their classifier (the last Gemm, on global-pooled
features) on this task with logistic regression, so their decisions depend on
the input and their accuracy can be measured against real labels.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

GRAY = ("camera", "brick")
COLOR = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
         "stereo_motorcycle")
CLASSES = (*COLOR, "china", "flower", *GRAY)
TRAIN_FRACTION = 0.6


def photographs() -> list[np.ndarray]:
    """The twelve photographs as (H, W, 3) uint8, in ``CLASSES`` order."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    sample = dict(zip(("china", "flower"), load_sample_images().images))
    out = []
    for name in CLASSES:
        if name in sample:
            photo = sample[name]
        elif name == "stereo_motorcycle":
            photo = skimage.data.stereo_motorcycle()[0]
        else:
            photo = np.asarray(getattr(skimage.data, name)())
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        out.append(np.ascontiguousarray(photo, dtype=np.uint8))
    return out


def crops(count: int, split: str, seed: int, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """``count`` crops (NCHW float32 in [0, 1]) and labels, from the ``"train"`` or ``"test"`` region."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = photographs()
    images, labels = [], []
    for i in range(count):
        label = i % len(photos)
        photo = photos[label]
        width = photo.shape[1]
        cut = int(width * TRAIN_FRACTION)
        region = photo[:, :cut] if split == "train" else photo[:, cut:]
        side = int(min(region.shape[:2]) * rng.uniform(0.5, 1.0))
        top = rng.integers(0, region.shape[0] - side + 1)
        left = rng.integers(0, region.shape[1] - side + 1)
        crop = Image.fromarray(region[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        images.append(np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0)
        labels.append(label)
    return np.stack(images), np.array(labels, np.int64)


def fit_head(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray, fc: str = "head/fc") -> dict:
    """Retrain the classifier Gemm ``fc`` (its input: pooled features) on ``images``; returns train facts.

    The Gemm's weight ``{fc}/W`` becomes (classes, features) and its bias
    ``{fc}/B`` (classes,); the output's shape follows.
    """
    from sklearn.linear_model import LogisticRegression

    gemm = next(n for n in model.graph.node if n.name == fc)
    features = _features(model, gemm.input[0], images)
    mean, std = features.mean(0), features.std(0) + 1e-6
    classifier = LogisticRegression(C=0.1, max_iter=3000).fit((features - mean) / std, labels)
    weight = (classifier.coef_ / std).astype(np.float32)
    bias = (classifier.intercept_ - (classifier.coef_ / std) @ mean).astype(np.float32)
    for init in model.graph.initializer:
        if init.name in (gemm.input[1], gemm.input[2]):
            init.CopyFrom(numpy_helper.from_array(weight if init.name == gemm.input[1] else bias, init.name))
    output = next(o for o in model.graph.output if o.name == gemm.output[0])
    output.type.tensor_type.shape.dim[-1].dim_value = weight.shape[0]
    onnx.checker.check_model(model)
    return {"classes": int(weight.shape[0]), "train_images": len(images),
            "train_accuracy": float(classifier.score((features - mean) / std, labels))}


def _features(model: onnx.ModelProto, name: str, images: np.ndarray) -> np.ndarray:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return np.concatenate([session.run([name], {input_name: x[None]})[0].reshape(1, -1) for x in images])
