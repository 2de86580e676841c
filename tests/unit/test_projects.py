import pytest

from fjord.errors import AlreadyExistsError, InvalidNameError, NotFoundError
from fjord.projects import LAYOUT, create_project, ensure_project, get_project, list_projects


def test_create_gives_the_layout_and_record() -> None:
    project = create_project("fraud", description="card fraud", owner="ana")
    for folder in LAYOUT:
        assert project.fs.exists(folder)
    again = get_project("fraud")
    assert (again.name, again.owner, again.description) == ("fraud", "ana", "card fraud")
    assert again.created == project.created
    assert again.root_uri.endswith("/Projects/fraud")


def test_list_and_duplicates() -> None:
    assert list_projects() == []
    create_project("b_proj")
    create_project("a_proj")
    assert [p.name for p in list_projects()] == ["a_proj", "b_proj"]
    with pytest.raises(AlreadyExistsError, match="project 'a_proj' already exists"):
        create_project("a_proj")


def test_ensure_is_idempotent() -> None:
    first = ensure_project("fraud")
    assert ensure_project("fraud").created == first.created


@pytest.mark.parametrize("bad", ["", "Fraud", "1abc", "../etc", "a/b", "a b", "x" * 64, "fraud."])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid project name"):
        create_project(bad)


def test_unknown_project_lists_the_known_ones() -> None:
    create_project("risk")
    with pytest.raises(NotFoundError, match=r"unknown project 'fraud' \(projects: risk\)") as info:
        get_project("fraud")
    assert info.value.hint == "create it with: fjord project create fraud"
