import struct

import pytest

from datakit import tfrecord


def test_example_bytes_equal_tensorflow_deterministic_serialization():
    tf = pytest.importorskip("tensorflow")
    feats = {"image/encoded": b"\xff\xd8\x00jpeg", "image/height": 200, "neg": [-5, 7], "text": "white_male",
             "f": [1.5, -2.0], "empty": [], "big": 2 ** 40, "m1": -1, "min": [-2 ** 63, 127, 128, 16384],
             "long": b"y" * 20000, "names": [b"a", "b" * 200]}
    proto = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8\x00jpeg"])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[200])),
        "neg": tf.train.Feature(int64_list=tf.train.Int64List(value=[-5, 7])),
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"white_male"])),
        "f": tf.train.Feature(float_list=tf.train.FloatList(value=[1.5, -2.0])),
        "empty": tf.train.Feature(int64_list=tf.train.Int64List(value=[])),
        "big": tf.train.Feature(int64_list=tf.train.Int64List(value=[2 ** 40])),
        "m1": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1])),
        "min": tf.train.Feature(int64_list=tf.train.Int64List(value=[-2 ** 63, 127, 128, 16384])),
        "long": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"y" * 20000])),
        "names": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"b" * 200])),
    }))
    assert tfrecord.encode_example(feats) == proto.SerializeToString(deterministic=True)
    back = tfrecord.parse_example(tfrecord.encode_example(feats))
    assert back["neg"] == [-5, 7] and back["f"] == [1.5, -2.0] and back["text"] == [b"white_male"]


def test_records_round_trip_through_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "x.tfrecord"
    payloads = [b"", b"a", bytes(range(256)) * 40]
    with open(path, "wb") as f:
        for p in payloads:
            tfrecord.write_record(f, p)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads
    assert list(tfrecord.read_records(path)) == payloads
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        list(tfrecord.read_records(path))
    path.write_bytes(struct.pack("<Q", 5))
    with pytest.raises(ValueError, match="truncated"):
        list(tfrecord.read_records(path))
