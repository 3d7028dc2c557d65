"""tm2-pipeline: ICD-11 chapter 26 (TM2) clinic exports -> MongoDB -> OpenMRS."""

from tm2_pipeline.privacy import silence_identifying_loggers

silence_identifying_loggers()
