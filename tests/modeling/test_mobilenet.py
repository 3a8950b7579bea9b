"""MobileNetV2: Google's .tflite weights imported exactly, and the encoder built on them."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import segany
from segany.errors import CheckpointError
from segany.modeling import CONFIGS
from segany.modeling.mobilenet import ConvSame, MobileNetV2
from segany.modeling.tflite_weights import load_mobilenet_v2, mobilenet_v2_state_dict, read_tflite_convolutions

TFLITE_FILES = ["mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite"]
# The reference runs uint8 activations: its logits are ours plus quantisation noise. Measured on
# 26 photos, our float32 logits stay within 0.9 of its dequantised ones (logits spread with a
# standard deviation of 1-2) at a correlation above 0.99.
LOGIT_TOLERANCE = 1.0


@pytest.fixture(scope="module")
def photos(shared_data):
    paths = sorted((shared_data / "coco128-seg" / "images").glob("*.jpg"))[:8]
    paths += sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[:3]
    paths += [shared_data / "examples" / "dog.jpg", shared_data / "examples" / "truck.jpg"]
    with_names = []
    for path in paths:
        with Image.open(path) as image:
            with_names.append((path.name, np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR))))
    return with_names


@pytest.fixture(scope="module")
def pretrained(pretrained_dir):
    return lambda name: pretrained_dir / name


def reference_logits(path: Path, image: np.ndarray) -> np.ndarray:
    """The LiteRT interpreter's logits (the tensor before the softmax), dequantised."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    softmax_input = [d for d in interpreter.get_tensor_details() if tuple(d["shape"]) == (1, 1001)][0]
    scale, zero_point = softmax_input["quantization"]
    return scale * (interpreter.get_tensor(softmax_input["index"])[0].astype(np.float32) - zero_point)


@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
@pytest.mark.parametrize("name", TFLITE_FILES)
def test_imported_classifier_agrees_with_the_reference_interpreter(name, photos, pretrained):
    path = pretrained(name)
    network = load_mobilenet_v2(path)
    for photo, image in photos:
        expected = reference_logits(path, image)
        with torch.no_grad():
            ours = network((torch.as_tensor(image).permute(2, 0, 1)[None].float() - 128) / 128)[0].numpy()
        assert np.abs(ours - expected).max() < LOGIT_TOLERANCE, photo
        assert np.corrcoef(ours, expected)[0, 1] > 0.99, photo
        assert ours.argmax() == expected.argmax(), photo
        # Same top 5, up to classes whose logits are closer than the tolerance to the fifth.
        for top5, other in ((np.argsort(-expected)[:5], ours), (np.argsort(-ours)[:5], expected)):
            fifth = np.sort(other)[-5]
            assert all(other[c] > fifth - LOGIT_TOLERANCE for c in top5), photo


def test_named_classes_of_the_example_photos(shared_data, pretrained):
    labels = (pretrained("imagenet_labels.txt")).read_text().splitlines()
    network = load_mobilenet_v2(pretrained(TFLITE_FILES[0]))
    repo = Path(__file__).resolve().parents[2]
    for path, expected in ((repo / "examples" / "chelsea.png", "cat"), (shared_data / "examples" / "truck.jpg", "van")):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR))
        with torch.no_grad():
            logits = network((torch.as_tensor(pixels).permute(2, 0, 1)[None].float() - 128) / 128)[0]
        assert expected in labels[int(logits.argmax())]


@pytest.mark.parametrize("size, expected", [(224, (0, 1)), (225, (1, 1)), (7, (1, 1)), (8, (0, 1))])
def test_same_padding_puts_the_odd_row_at_the_bottom(size, expected):
    conv = ConvSame(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # identity at the kernel centre
        conv.bias.zero_()
        x = torch.arange(size * size, dtype=torch.float).view(1, 1, size, size)
        y = conv(x)
    assert y.shape[-1] == -(-size // 2)
    top, _ = expected  # with no top padding, output 0 is centred on input row 1
    assert y[0, 0, 0, 0].item() == x[0, 0, 1 - top, 1 - top].item()


@pytest.mark.parametrize("kernel, stride, dilation", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (3, 1, 2), (3, 1, 4)])
@pytest.mark.parametrize("size", [7, 8, 48])
def test_same_padding_inside_the_conv_equals_a_padded_copy(kernel, stride, dilation, size):
    """Where the SAME padding is even the conv pads itself, elsewhere its kernel gets a leading
    zero row and column: either way the answer of a conv over the padded input (where the
    padding goes: the test above)."""
    torch.manual_seed(size)
    conv = ConvSame(4, 4, kernel, stride, dilation, groups=4)
    x = torch.randn(1, 4, size, size + 1)
    with torch.no_grad():
        got = conv(x)
        want = torch.nn.Conv2d.forward(conv, F.pad(x, conv.same_padding(size, size + 1)))
    assert got.shape[-2:] == (-(-size // stride), -(-(size + 1) // stride))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_dilation_with_stride_or_an_even_kernel_is_refused():
    for kernel, stride in ((3, 2), (2, 1)):
        with pytest.raises(ValueError, match="dilated"):
            ConvSame(4, 4, kernel, stride, dilation=2)


@pytest.mark.parametrize("stride", [1, 2])
def test_relu6_fused_into_the_conv_equals_the_conv_then_relu6(stride):
    """Without gradients the conv and its ReLU6 run as one oneDNN op; with them, apart. Both
    give relu6 of the conv over the padded input."""
    torch.manual_seed(stride)
    conv = ConvSame(8, 8, 3, stride, groups=8, relu6=True)
    x = torch.randn(2, 8, 15, 16) * 10
    want = F.relu6(torch.nn.Conv2d.forward(conv, F.pad(x, conv.same_padding(15, 16))))
    with torch.no_grad(), torch.profiler.profile() as profile:
        fused = conv(x)
    assert "mkldnn::_convolution_pointwise" in {event.name for event in profile.events()}
    apart = conv(x.clone().requires_grad_())
    assert apart.grad_fn is not None
    for got in (fused, apart):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (want == 0).any() and (want == 6).any() and ((want > 0) & (want < 6)).any()  # both clamps at work


def test_a_trained_bias_alone_gets_its_gradient():
    """A frozen weight with a trained bias still needs the unfused path (the fused op has no gradient)."""
    torch.manual_seed(0)
    conv = ConvSame(8, 8, 3, 2, groups=8, relu6=True)
    conv.weight.requires_grad_(False)
    x = torch.randn(2, 8, 15, 16) * 10
    with torch.no_grad():
        before_relu6 = torch.nn.Conv2d.forward(conv, F.pad(x, conv.same_padding(15, 16)))
    conv(x).sum().backward()
    # d sum(relu6(y)) / d bias: per channel, the outputs inside ReLU6's slope.
    assert conv.bias.grad is not None
    torch.testing.assert_close(conv.bias.grad, ((before_relu6 > 0) & (before_relu6 < 6)).sum(dim=(0, 2, 3)).float())


def test_output_stride_keeps_the_weights_and_the_grid(pretrained):
    path = pretrained(TFLITE_FILES[0])
    for stride in (8, 16, 32):
        network = MobileNetV2(stride, num_classes=None)
        network.load_state_dict(mobilenet_v2_state_dict(path, network))
        with torch.no_grad():
            assert network.forward_features(torch.zeros(1, 3, 256, 256))[-1].shape == (1, 320, 256 // stride, 256 // stride)
    dilated = [block.depthwise.dilation[0] for block in MobileNetV2(16).blocks]
    assert dilated == [1] * 14 + [2] * 3  # the last stage, after its first block, sees twice as far


def test_dilated_trunk_keeps_the_imagenet_features(photos, pretrained):
    """At output stride 16 (the default model's) the pretrained classifier still recognises the photos."""
    path = pretrained(TFLITE_FILES[0])
    plain, dilated = load_mobilenet_v2(path), load_mobilenet_v2(path, output_stride=16)
    agree = 0
    for _, image in photos:
        x = (torch.as_tensor(image).permute(2, 0, 1)[None].float() - 128) / 128
        with torch.no_grad():
            agree += int(plain(x).argmax() == dilated(x).argmax())
    assert agree >= 0.8 * len(photos)


def test_default_architecture_round_trips_with_its_config(tmp_path):
    model = segany.random_model("mobilenet_v2", seed=2)
    path = tmp_path / "m.safetensors"
    segany.save_model(model, path)
    loaded = segany.load_model(path)
    assert loaded.config == CONFIGS["mobilenet_v2"]
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert loaded.image_encoder(torch.zeros(1, 3, 512, 512)).shape == (1, 128, 32, 32)
    with pytest.raises(CheckpointError, match="use .safetensors"):
        segany.save_model(model, tmp_path / "m.pth")
    assert not (tmp_path / "m.pth").exists()
    with pytest.raises(CheckpointError, match="MobileNetV2-encoder model without its config"):
        segany.detect_config(model.state_dict())


def test_bad_tflite_files_are_named(tmp_path, pretrained):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.tflite"):
        read_tflite_convolutions(junk)
    wrong = MobileNetV2(num_classes=10)  # not the 1001-class network of the file
    with pytest.raises(CheckpointError, match="classifier expects"):
        mobilenet_v2_state_dict(pretrained(TFLITE_FILES[0]), wrong)
