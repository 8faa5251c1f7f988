"""A TensorFlow SavedModel of a bundle, for TF Serving: written on demand, not by export.

The SavedModel's serving signature takes uint8 [N, H, W, C] images of any size (the model
resizes and standardises them itself) and returns the model's scores, without the bundle's
calibration (calibration.json; the bundle's code/ applies it). Export leaves it out of the
bundle because TensorFlow names its functions from a process counter, so its bytes differ
from run to run and no dvc.lock could hold it.

Run: reprovision savedmodel models/runs/digits-cnn-base/bundle /tmp/digits-cnn-base/1
"""

from pathlib import Path

from data_processing.core import cli
from data_processing.core.errors import DataError, exit_on_error
from models.common.quiet import import_tensorflow


@exit_on_error
def main() -> None:
    bundle, out = cli.paths(
        __doc__,
        ("bundle", "a bundle: models/runs/<cell>/bundle, deployment/<dataset>/production"),
        ("out", "the SavedModel folder to write (TF Serving: <model>/<version>)"),
    )
    if not (bundle / "model.keras").is_file():
        raise DataError(bundle, "an export bundle with model.keras")
    import_tensorflow()
    import keras

    model = keras.saving.load_model(bundle / "model.keras", compile=False)
    write(model, out)
    print(f"savedmodel: {bundle} -> {out}")


def write(model, out: Path) -> None:
    """`model` in inference mode (as serving.inference_fn runs it) as a SavedModel whose
    "serving_default" signature takes uint8 "images" [N, H, W, C]. Not `model.export`: its
    endpoint ran dropout and augmentation as in training."""
    import keras

    from models.common.serving import inference_fn

    fn, spec = inference_fn(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=fn, input_signature=[spec])
    archive.write_out(str(out), verbose=False)


if __name__ == "__main__":
    main()
