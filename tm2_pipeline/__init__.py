"""tm2-pipeline: ICD-11 chapter 26 (TM2) clinic exports -> MongoDB -> OpenMRS."""
