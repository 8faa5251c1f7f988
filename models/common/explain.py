"""Heat maps of where a Keras model of the zoo looked for a class: `explain(model, images)`.

Grad-CAM (Selvaraju et al. 2017) for every net with a convolution: the gradient of the class
logit, averaged over the last spatial layer's positions, weighs that layer's channels; also
inside a nested backbone (mobilenet's). Integrated gradients (Sundararajan et al. 2017, black
baseline) where no conv layer gives a spatial map (mlp). Both differentiate the logit, the
output layer's pre-activation: a saturated softmax has zero gradient. A heat map has the
input's size, each scaled to 0..1 by its own maximum (all zeros: nothing for the class).

Used by evaluate (heat maps in the failure grid) and, from a bundle's code/, by the server's
POST /explain (deployment/server/explain.py). Needs TensorFlow: ONNX has no gradients.
`overlay` (numpy only) draws a heat map over its image.
"""

import numpy as np

from models.common.quiet import import_tensorflow

GRAD_CAM = "grad-cam"
INTEGRATED_GRADIENTS = "integrated-gradients"
IG_STEPS = 32  # Riemann midpoints along the path from black to the image
IG_CHUNK = 256  # path images per gradient call: bounds memory for large batches
# (heat, r, g, b) stops of the overlay's colour map: dark blue, cyan, yellow, red
_COLOURS = np.array(
    [[0.0, 0, 0, 128], [0.35, 0, 200, 255], [0.7, 255, 230, 0], [1.0, 230, 0, 0]], np.float32
)


def explain(
    model, images: np.ndarray, class_index: int | np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Heat maps of `model` for uint8 images [N, H, W, C], once: an eager `Explainer` (a
    tf.function's tracing, about 0.5 s, pays off only over repeated calls).

    Args:
        model: a Keras model of the zoo (raw uint8 in, class scores out).
        images: uint8 [N, H, W, C], any H, W (the graph resizes).
        class_index: the class to explain: one for all, one per image, or None: each
            image's top-scoring class.

    Returns:
        (float32 [N, H, W] in 0..1, the method: "grad-cam" or "integrated-gradients").
    """
    explainer = Explainer(model, compiled=False)
    return explainer(images, class_index), explainer.method


class Explainer:
    """A model's explanation, built once: its sub-models and, `compiled`, one tf.function
    over any batch and image size, traced on the first call (about 0.5 s) and never again;
    after that a few ms an image, several times less than eager. The server keeps one per
    bundle; evaluate's one call is eager (`explain`).

    Attributes: method ("grad-cam" or "integrated-gradients"), layer (the Grad-CAM layer,
    "backbone/<name>" when nested; for integrated gradients the layer whose output is
    attributed, the graph's resize).
    """

    def __init__(self, model, compiled: bool = True) -> None:
        tf = import_tensorflow()
        self.model = model
        self._logits, end = _logits(model)
        cut = _spatial_cut(model, end)
        self.method = GRAD_CAM if cut else INTEGRATED_GRADIENTS
        self._features, self._head, self.layer = cut or _pixels_cut(model, end)
        raw = model.inputs[0]
        images = tf.TensorSpec([None, None, None, raw.shape[-1]], raw.dtype)
        classes = tf.TensorSpec([None], tf.int32)  # -1: the image's top class
        maps = self._grad_cam if cut else self._integrated_gradients
        self._maps = tf.function(maps, input_signature=[images, classes]) if compiled else maps

    def __call__(self, images: np.ndarray, class_index=None) -> np.ndarray:
        """float32 [N, H, W] in 0..1 for uint8 images [N, H, W, C]; see `explain`."""
        tf = import_tensorflow()
        images = np.asarray(images)
        n = images.shape[0]
        if n == 0:
            return np.zeros(images.shape[:3], np.float32)
        wanted = -1 if class_index is None else class_index
        classes = np.broadcast_to(np.asarray(wanted, np.int32), (n,))
        step = n if self.method == GRAD_CAM else max(1, IG_CHUNK // IG_STEPS)
        maps = tf.concat(
            [self._maps(images[i : i + step], classes[i : i + step]) for i in range(0, n, step)],
            axis=0,
        )
        maps = tf.image.resize(maps[..., None], images.shape[1:3], method="bilinear")
        return _scaled(np.asarray(maps)[..., 0])

    def _chosen(self, x, classes):
        """The logits of `classes` (-1: the top one) for the head's input x."""
        tf = import_tensorflow()
        logits = self._logits(self._head(x, training=False))
        top = tf.argmax(logits, axis=1, output_type=tf.int32)
        return tf.gather(logits, tf.where(classes < 0, top, classes), axis=1, batch_dims=1)

    def _grad_cam(self, images, classes):
        tf = import_tensorflow()
        features = self._features(images, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            chosen = self._chosen(features, classes)
        grads = tape.gradient(chosen, features)  # [N, h, w, channels]
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, grads.dtype), axis=-1))

    def _integrated_gradients(self, images, classes):
        # Path images alpha * x (black baseline), alpha at the midpoints of IG_STEPS bins.
        # With the graph's per-image standardization the logits do not change along most of
        # the path, so this is close to gradient x input, up to a scale the 0..1 map removes.
        tf = import_tensorflow()
        pixels = tf.cast(self._features(images, training=False), "float32")
        top = tf.argmax(self._logits(self._head(pixels, training=False)), 1, tf.int32)
        classes = tf.where(classes < 0, top, classes)
        alphas = (np.arange(IG_STEPS, dtype=np.float32) + 0.5) / IG_STEPS
        path = alphas[:, None, None, None, None] * pixels[None]  # [steps, n, h, w, C]
        path = tf.reshape(path, [-1, *pixels.shape[1:]])  # h, w: the resize's, static
        with tf.GradientTape() as tape:
            tape.watch(path)
            chosen = self._chosen(path, tf.tile(classes, [IG_STEPS]))
        grads = tf.reshape(
            tape.gradient(chosen, path), tf.concat([[IG_STEPS], tf.shape(pixels)], 0)
        )
        attributions = pixels * tf.reduce_mean(grads, axis=0)  # (x - black) x mean gradient
        return tf.reduce_sum(tf.abs(attributions), axis=-1)


def _logits(model):
    """(pre-activation function, the tensor it takes): the output Dense without its softmax
    or sigmoid (layers.head); any other output layer: its log-scores."""
    import keras

    tf = import_tensorflow()
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if isinstance(last, keras.layers.Dense) and activation in ("softmax", "sigmoid"):

        def logits(z):
            z = tf.matmul(tf.cast(z, last.kernel.dtype), last.kernel)
            return z + last.bias if last.use_bias else z

        return logits, last.input
    return (lambda p: tf.math.log(tf.maximum(tf.cast(p, "float32"), 1e-12))), model.output


def _spatial_cut(model, end):
    """(features, head, layer name) with head(features(x)) = tensor `end` of `model`, cut at
    the last 4-D layer at or after a convolution (not a pooling: the layer before it has the
    finer map), inside a nested model too; None when there is none (the mlp)."""
    import keras

    layers = model.layers
    first_conv = next((i for i, lay in enumerate(layers) if "Conv" in type(lay).__name__), None)
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, keras.Model):  # a nested functional: cut inside, then wrap it
            if (inner := _spatial_cut(layer, layer.output)) is not None:
                return _wrapped(model, layer, end, inner)
            continue
        spatial = len(layer.output.shape) == 4 and "Pooling" not in type(layer).__name__
        if first_conv is None or i < first_conv or not spatial:
            continue
        try:  # a 4-D layer inside a residual branch is not a cut of the graph: go on
            return (
                keras.Model(model.input, layer.output),
                keras.Model(layer.output, end),
                layer.name,
            )
        except ValueError:
            continue
    return None


def _wrapped(model, nested, end, inner):
    """`inner`, the cut of the `nested` model, as a cut of `model`: the outer graph up to
    the nested model's input, and from its output to `end`."""
    import keras

    # keras.Operation's input/output: where the nested model was called in `model` (a
    # Functional's own .input/.output are its inner tensors)
    called_on = keras.Operation.input.fget(nested)
    gave = keras.Operation.output.fget(nested)
    before, after = keras.Model(model.input, called_on), keras.Model(gave, end)
    features, head, name = inner

    def outer_features(x, training=False):
        return features(before(x, training=training), training=training)

    def outer_head(a, training=False):
        return after(head(a, training=training), training=training)

    return outer_features, outer_head, f"{nested.name}/{name}"


def _pixels_cut(model, end):
    """(to pixels, head, layer name): cut after the graph's resize (layers.inputs), whose
    float output 0..255 integrated gradients attribute; a model without one: its input."""
    import keras

    names = [layer.name for layer in model.layers]
    if "resize" not in names:
        return (lambda x, training=False: x), keras.Model(model.input, end), "input"
    pixels = model.get_layer("resize").output
    return keras.Model(model.input, pixels), keras.Model(pixels, end), "resize"


def _scaled(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum, in 0..1; an all-zero or non-finite map: zeros."""
    maps = np.nan_to_num(maps.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    maps = np.maximum(maps, 0.0)
    top = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0).clip(0.0, 1.0)


def overlay(image: np.ndarray, heat: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """uint8 [H, W, 3]: `image` (uint8 [H, W, C], C 1 or 3) under `heat` ([H, W], 0..1)
    coloured blue (cold) to red (hot), blended by strength x heat: cold regions show the
    image."""
    base = np.asarray(image, np.float32)
    base = np.repeat(base, 3, axis=-1) if base.shape[-1] == 1 else base[..., :3]
    heat = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
    colour = np.stack(
        [np.interp(heat, _COLOURS[:, 0], _COLOURS[:, k]) for k in (1, 2, 3)], axis=-1
    )
    alpha = strength * heat[..., None]
    return np.clip((1 - alpha) * base + alpha * colour, 0, 255).round().astype(np.uint8)
