import pytest

from edgevit.runtime import schema as s

DOC = s.Record({"name": s.TEXT, "shape": s.ListOf(s.int_in(1, 10), 1, 3)}, {"tags": s.MapOf(s.TEXT, s.BOOL)})


def test_a_fitting_document_passes():
    s.check({"name": "x", "shape": [1, 2], "tags": {"a": True}}, DOC)


@pytest.mark.parametrize("doc, path, words", [
    ({"shape": [1]}, "name", "is missing"),
    ({"name": 5, "shape": [1]}, "name", "must be a one-line string"),
    ({"name": "x", "shape": [1, 11]}, "shape[1]", "from 1 to 10"),
    ({"name": "x", "shape": [True]}, "shape[0]", "integer"),
    ({"name": "x", "shape": []}, "shape", "1 to 3 items"),
    ({"name": "x", "shape": [1], "tags": {"a": "yes"}}, "tags.a", "true or false"),
    ({"name": "x", "shape": [1], "extra": 1}, "extra", "not a known field"),
    ([1], "", "table/object"),
])
def test_the_violation_names_the_field(doc, path, words):
    with pytest.raises(s.SchemaViolation, match=words) as info:
        s.check(doc, DOC)
    assert info.value.path == path


def test_either_and_one_of():
    node = s.Either((s.one_of("detect"), s.int_in(1, 5)))
    node.check("detect", "m")
    node.check(3, "m")
    with pytest.raises(s.SchemaViolation, match="'detect' or an integer from 1 to 5"):
        node.check(True, "m")
