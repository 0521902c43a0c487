"""XML in and out, _format, _pretty, the CapabilityStatement."""

from __future__ import annotations

from lxml import etree

XML = "application/fhir+xml"
NS = {"f": "http://hl7.org/fhir"}


def test_metadata_json_and_xml(client):
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert len(resources) == 146
    assert {"read", "vread", "update", "patch", "delete", "create", "search-type"} <= {
        i["code"] for i in resources["DocumentReference"]["interaction"]}
    assert "patient" in {p["name"] for p in resources["DocumentReference"]["searchParam"]}
    assert any(op["name"] == "validate" for op in resources["Patient"].get("operation", []))
    xml = client.get("/fhir/metadata", headers={"Accept": XML})
    assert xml.headers["Content-Type"].startswith(XML)
    root = etree.fromstring(xml.content)
    assert root.tag == "{http://hl7.org/fhir}CapabilityStatement"
    assert root.find("f:fhirVersion", NS).get("value") == "4.0.1"


def test_xml_create_and_read(client):
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http://hl7.org/fhir">'
            b'<name><family value="Th\xc3\xa9venet"/><given value="H\xc3\xa9l\xc3\xa8ne"/></name>'
            b'<birthDate value="1975-06-01"/></Patient>')
    response = client.post("/fhir/Patient", content=body, headers={"Content-Type": XML, "Accept": XML})
    assert response.status_code == 201
    root = etree.fromstring(response.content)
    pid = root.find("f:id", NS).get("value")
    as_json = client.get(f"/fhir/Patient/{pid}").json()
    assert as_json["name"] == [{"family": "Thévenet", "given": ["Hélène"]}]
    assert client.get(f"/fhir/Patient/{pid}", params={"_format": "xml"}).headers["Content-Type"].startswith(XML)


def test_bad_xml_is_400(client):
    response = client.post("/fhir/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'><name>",
                           headers={"Content-Type": XML})
    assert response.status_code == 400
    xxe = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/></name></Patient>')
    response = client.post("/fhir/Patient", content=xxe, headers={"Content-Type": XML})
    assert response.status_code == 400
    assert b"root:" not in response.content


def test_pretty_and_format_json(client):
    response = client.get("/fhir/metadata", params={"_format": "json", "_pretty": "true"})
    assert response.text.startswith("{\n")
