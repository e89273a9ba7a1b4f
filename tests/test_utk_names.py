import pytest

from datakit.datasets.utk.names import NameError_, class_names, label_of, looks_like_image_name, parse_name


@pytest.mark.parametrize("name, labels", [
    ("25_0_1_20170116174525125.jpg.chip.jpg", (25, 0, 1)),
    ("55_0_0_20170116232725357jpg.chip.jpg", (55, 0, 0)),       # missing dot before jpg
    ("24_0_1_20170116220224657 .jpg.chip.jpg", (24, 0, 1)),     # stray space
    ("1_1_4_201701162327253571234.jpg.chip.jpg", (1, 1, 4)),    # longer timestamp
    ("48_1_2_2017011.jpg", (48, 1, 2)),                          # shorter timestamp, plain .jpg
    ("0_0_3_x.jpg", (0, 0, 3)),
    ("120_1_0_20170109150557335.jpg.chip.jpg", (120, 1, 0)),
])
def test_valid_names(name, labels):
    got = parse_name(name)
    assert (got.age, got.gender, got.race) == labels


@pytest.mark.parametrize("name, reason", [
    ("39_1_20170116174525125.jpg.chip.jpg", "missing field"),
    ("61_1_.jpg.chip.jpg", "missing field"),
    ("3__1_2017.jpg", "missing gender"),
    ("abc_0_1_2017.jpg", "not a number"),
    ("-1_0_0_2017.jpg", "not a number"),
    ("121_0_0_2017.jpg", "age 121 outside 0-120"),
    ("30_2_0_2017.jpg", "gender 2 outside 0-1"),
    ("30_1_5_2017.jpg", "race 5 outside 0-4"),
    ("IMG_0001.jpg", "does not start with age_gender_race_"),
])
def test_invalid_names(name, reason):
    with pytest.raises(NameError_, match=reason):
        parse_name(name)


def test_class_names_and_labels():
    assert class_names((0, 1, 2, 3)) == ["white_male", "white_female", "black_male", "black_female",
                                         "asian_male", "asian_female", "indian_male", "indian_female"]
    assert class_names((0, 1, 2, 3, 4))[-2:] == ["others_male", "others_female"]
    assert class_names((3, 0)) == ["indian_male", "indian_female", "white_male", "white_female"]
    assert label_of(parse_name("20_1_3_x.jpg"), (0, 1, 2, 3)) == 7
    assert label_of(parse_name("20_1_3_x.jpg"), (3, 0)) == 1


def test_stray_names():
    assert not looks_like_image_name(".DS_Store")
    assert not looks_like_image_name("notes.txt")
    assert not looks_like_image_name("._25_0_1_2017.jpg.chip.jpg")  # macOS resource fork
    assert looks_like_image_name("25_0_1_2017.JPG")


def test_canonical_fast_path_reads_like_the_lenient_parser():
    """Names the fast path takes must parse to the same labels through the lenient parser alone."""
    import re

    from datakit.datasets.utk import names

    rng = __import__("random").Random(5)
    cases = ["1_0_0_20170109150557335.jpg.chip.jpg", "120_1_4_x.jpg", "121_1_4_x.jpg", "007_1_2_2017.jpg",
             "20_1_3_.jpg", "20_1_0_ 2017.jpg", "20_0_4_20170116220224657 .jpg.chip.jpg"]
    cases += [f"{rng.randint(0, 130)}_{rng.randint(0, 2)}_{rng.randint(0, 6)}_{rng.randint(0, 10**17)}.jpg.chip.jpg"
              for _ in range(300)]
    slow = names._CANONICAL
    for name in cases:
        try:
            fast = names.parse_name(name)
        except names.NameError_ as exc:
            fast = str(exc)
        names._CANONICAL = re.compile(r"(?!)")  # never matches: the lenient parser alone
        try:
            lenient = names.parse_name(name)
        except names.NameError_ as exc:
            lenient = str(exc)
        finally:
            names._CANONICAL = slow
        assert fast == lenient, name
