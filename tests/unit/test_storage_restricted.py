"""A filter AND-ed to a query leaves the query's field conditions at the top level, where the
store's first stage (and so an index) serves them."""

from fhir_server.storage import restricted

ACCESS = {"$or": [{"_acl.deny": {"$nin": ["!masked"]}}, {"_acl.authors": "ps:1"}]}


def test_field_conditions_stay_on_top_and_the_filter_joins_the_and():
    assert restricted({"type": "Observation", "id": "o1"}, ACCESS) == \
        {"type": "Observation", "id": "o1", "$and": [ACCESS]}
    assert restricted({"type": "Observation", "$and": [{"a": 1}]}, {"b": 2}) == \
        {"type": "Observation", "$and": [{"a": 1}, {"b": 2}]}


def test_nothing_to_add_or_nothing_to_add_to():
    assert restricted({"type": "Observation"}, None) == {"type": "Observation"}
    assert restricted({"type": "Observation"}, {}) == {"type": "Observation"}
    assert restricted({}, ACCESS) == ACCESS


def test_the_query_itself_is_not_changed():
    query = {"type": "Observation", "$and": [{"a": 1}]}
    restricted(query, ACCESS)
    assert query == {"type": "Observation", "$and": [{"a": 1}]}
