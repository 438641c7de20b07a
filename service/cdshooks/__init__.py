"""HL7 CDS Hooks 2.0 service over FHIR R4: discovery, order-select / order-sign screening, feedback."""
