"""Every environment variable the pipeline reads, its default and its meaning.

Read from the process environment and from `.env` in the working directory (every entry point:
the CLI, `dagster dev`, the daemon). `.env.example` lists them all.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tm2_pipeline.mongo_uri import database_in_uri, is_readable, option_problem
from tm2_pipeline.openmrs.client_config import base_url_problem

# The emulator's built-in administrator: only ever used against the local sandbox.
SANDBOX_USERNAME = "admin"
SANDBOX_PASSWORD = "Admin123"
DEFAULT_DATABASE = "tm2"


class SettingsError(ValueError):
    """A setting is missing or contradicts another one; the message names the variable."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


def parse_write_concern(value: str) -> str | int:
    """TM2_MONGO_WRITE_CONCERN as pymongo's `w`: "majority" or a number of members >= 1."""
    value = value.strip()
    if value == "majority":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    # w=0 is refused: unacknowledged writes would make the insert/update counts fiction.
    raise SettingsError(
        f"TM2_MONGO_WRITE_CONCERN must be 'majority' or an integer >= 1 (0 would leave writes "
        f"unacknowledged), not {value!r}"
    )


class Settings(BaseSettings):
    # An empty value means unset, for every setting: `.env.example`'s lines uncommented as they are
    # must give the defaults (an empty path would be the working directory, an empty number an error).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    mode: Literal["local", "production"] = Field("local", validation_alias=_env("TM2_MODE"))
    home: Path = Field(Path(".tm2"), validation_alias=_env("TM2_HOME"))
    dagster_home_override: Path | None = Field(None, validation_alias=_env("DAGSTER_HOME"))
    landing_dir_override: Path | None = Field(None, validation_alias=_env("TM2_LANDING_DIR"))
    timezone: str = Field("Asia/Kolkata", validation_alias=_env("TM2_TIMEZONE"))
    log_json: bool = Field(False, validation_alias=_env("TM2_LOG_JSON"))

    # MongoDB
    mongodb_uri: SecretStr | None = Field(None, validation_alias=_env("MONGODB_URI"))
    mongodb_db: str | None = Field(None, validation_alias=_env("TM2_MONGODB_DB"))
    mongo_batch: int = Field(5000, gt=0, validation_alias=_env("TM2_MONGO_BATCH"))
    mongo_write_concern: str = Field("majority", validation_alias=_env("TM2_MONGO_WRITE_CONCERN"))

    # OpenMRS
    openmrs_base_url: str | None = Field(None, validation_alias=_env("OPENMRS_BASE_URL"))
    openmrs_username: str | None = Field(None, validation_alias=_env("OPENMRS_USERNAME"))
    openmrs_password: SecretStr | None = Field(None, validation_alias=_env("OPENMRS_PASSWORD"))
    openmrs_allow_insecure: bool = Field(False, validation_alias=_env("OPENMRS_ALLOW_INSECURE"))
    # Conditions through the REST API (default) or FHIR2's Condition resource.
    openmrs_api: Literal["rest", "fhir"] = Field("rest", validation_alias=_env("OPENMRS_API"))
    openmrs_ca_bundle: Path | None = Field(None, validation_alias=_env("OPENMRS_CA_BUNDLE"))
    openmrs_concurrency: int = Field(8, gt=0, validation_alias=_env("TM2_OPENMRS_CONCURRENCY"))
    openmrs_connect_timeout_s: float = Field(
        5.0, gt=0, validation_alias=_env("TM2_OPENMRS_CONNECT_TIMEOUT_S")
    )
    openmrs_page_limit: int = Field(100, ge=1, le=1000, validation_alias=_env("TM2_OPENMRS_PAGE_LIMIT"))
    openmrs_read_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("TM2_OPENMRS_READ_TIMEOUT_S"))
    openmrs_concept_source: str = Field("ICD-11-TM2", validation_alias=_env("TM2_OPENMRS_CONCEPT_SOURCE"))
    openmrs_allow_noncoded: bool = Field(True, validation_alias=_env("TM2_OPENMRS_ALLOW_NONCODED"))
    submission_warn: float = Field(0.2, ge=0, le=1, validation_alias=_env("TM2_SUBMISSION_WARN"))
    patient_retry_days: int = Field(30, ge=0, validation_alias=_env("TM2_PATIENT_RETRY_DAYS"))

    # Validation
    day_first: bool = Field(True, validation_alias=_env("TM2_DAY_FIRST"))
    reject_warn: float = Field(0.05, ge=0, le=1, validation_alias=_env("TM2_REJECT_WARN"))
    reject_block: float = Field(0.5, ge=0, le=1, validation_alias=_env("TM2_REJECT_BLOCK"))

    # Landing-dir sensor
    sensor_interval_s: int = Field(30, gt=0, validation_alias=_env("TM2_SENSOR_INTERVAL_S"))
    sensor_max_runs: int = Field(10, gt=0, validation_alias=_env("TM2_SENSOR_MAX_RUNS"))

    @model_validator(mode="after")
    def _real_endpoints_are_complete(self) -> Settings:
        if self.mode == "production" and (
            missing := _unset(("MONGODB_URI", self.mongodb_uri), ("OPENMRS_BASE_URL", self.openmrs_base_url))
        ):
            raise SettingsError(
                f"TM2_MODE=production requires {' and '.join(missing)}; "
                "refusing to fall back to the embedded store or the sandbox"
            )
        if self.mongodb_uri and not is_readable(self.mongodb_uri.get_secret_value()):
            # Its database and options could not be told apart from its credentials.
            raise SettingsError(
                "MONGODB_URI must look like mongodb://user:password@host/database?options (or "
                "mongodb+srv://...), with '@', '/' and '?' percent-encoded in the user name, the "
                "password and option values"
            )
        if self.mongodb_uri and (problem := option_problem(self.mongodb_uri.get_secret_value())):
            raise SettingsError(f"MONGODB_URI has {problem}")
        named = self._database_in_uri
        if self.mongodb_db and named and named != self.mongodb_db:
            raise SettingsError(
                f"TM2_MONGODB_DB={self.mongodb_db!r} but MONGODB_URI names the database {named!r}; "
                "set only one of them"
            )
        if self.openmrs_base_url:
            if problem := base_url_problem(self.openmrs_base_url, allow_insecure=self.openmrs_allow_insecure):
                raise SettingsError(problem)
            if unset := _unset(
                ("OPENMRS_USERNAME", self.openmrs_username), ("OPENMRS_PASSWORD", self.openmrs_password)
            ):
                raise SettingsError(
                    f"OPENMRS_BASE_URL is set, so {' and '.join(unset)} must be set too "
                    "(the sandbox's admin account is only used without OPENMRS_BASE_URL)"
                )
        return self

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"TM2_TIMEZONE={value!r} is not a time zone; use an IANA name such as Asia/Kolkata"
            ) from None
        return value

    @field_validator("mongo_write_concern")
    @classmethod
    def _usable_write_concern(cls, value: str) -> str:
        # Blank means unset, as for every setting (env_ignore_empty only takes "" for blank).
        return str(parse_write_concern(value)) if value.strip() else "majority"

    @field_validator("home", "dagster_home_override", "landing_dir_override")
    @classmethod
    def _a_directory(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """A folder, or a path where one can be made: not a file (every command would fail at its
        first write, with the operating system's words)."""
        if value is None:
            return value
        path = value.expanduser()
        for parent in (path, *path.parents):
            try:
                exists = parent.exists()
            except OSError:  # a folder this user may not look into: its own commands will say
                break
            if exists:
                if not parent.is_dir():
                    [name] = cls.model_fields[info.field_name].validation_alias.choices
                    raise SettingsError(
                        f"{name}={str(value)!r} is not a directory: {str(parent)!r} is a file"
                    )
                break
        return value

    @field_validator("openmrs_ca_bundle")
    @classmethod
    def _readable_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise SettingsError(
                f"OPENMRS_CA_BUNDLE={str(value)!r} is not a file (a PEM file of CA certificates)"
            )
        return value.expanduser().resolve() if value is not None else None

    @field_validator("openmrs_api", mode="before")
    @classmethod
    def _api_name(cls, value: object) -> object:
        """`OPENMRS_API=FHIR` or ` fhir ` mean fhir; an empty value means the default."""
        if isinstance(value, str):
            return value.strip().lower() or "rest"
        return value

    @field_validator(
        "mongodb_uri",
        "mongodb_db",
        "openmrs_base_url",
        "openmrs_username",
        "openmrs_password",
        "openmrs_ca_bundle",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        """`OPENMRS_BASE_URL=` (an example line left in .env) means: not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def _database_in_uri(self) -> str | None:
        return database_in_uri(self.mongodb_uri.get_secret_value()) if self.mongodb_uri else None

    @property
    def mongodb_database(self) -> str:
        """TM2_MONGODB_DB, else the database MONGODB_URI names (a user may hold rights there only)."""
        return self.mongodb_db or self._database_in_uri or DEFAULT_DATABASE

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def dagster_home(self) -> Path:
        return (self.dagster_home_override or self.home_dir / "dagster").expanduser().resolve()

    @property
    def landing_dir(self) -> Path:
        return (self.landing_dir_override or self.home_dir / "landing").expanduser().resolve()

    @property
    def uses_embedded_store(self) -> bool:
        return self.mongodb_uri is None

    @property
    def uses_sandbox(self) -> bool:
        return self.openmrs_base_url is None


def _unset(*settings: tuple[str, object]) -> list[str]:
    """The names among (variable, value) pairs whose value is not set (empty values read as unset)."""
    return [name for name, value in settings if not value]


def load_settings() -> Settings:
    """Read settings; a bad value raises `SettingsError` with the variable's name, never a traceback."""
    from dotenv import dotenv_values, load_dotenv
    from pydantic import ValidationError

    # Export `.env` into the environment too: `dg.EnvVar` secrets are read from os.environ.
    try:
        load_dotenv(".env", override=False, encoding="utf-8")
        _refuse_unknown_names(
            dotenv_values(".env", encoding="utf-8"), _OWN_PREFIXES, str(Path(".env").resolve())
        )
    except UnicodeDecodeError:
        raise SettingsError(
            f"{Path('.env').resolve()} is not UTF-8 text (saved as UTF-16 by Notepad?): save it as UTF-8"
        ) from None
    # Exported ones too, but only in the pipeline's own TM2_ namespace: other tools' MONGODB_* and
    # OPENMRS_* variables (an OpenMRS container's OPENMRS_DB_HOST) may well be in a shell, and so may
    # the service links Kubernetes (and Docker links) add for a Service named tm2-code-server.
    exported = {name: value for name, value in os.environ.items() if not _SERVICE_LINK.fullmatch(name)}
    _refuse_unknown_names(exported, ("TM2_",), "the environment")
    try:
        return Settings()
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            cause = problem.get("ctx", {}).get("error")
            if isinstance(cause, SettingsError):
                problems.append(str(cause))
            else:
                variable = ".".join(str(part) for part in problem["loc"])
                problems.append(f"{variable}: {problem['msg']}")
        raise SettingsError("; ".join(problems)) from None


# Prefixes of the pipeline's own variables: a name with one of them that no setting reads is a typo.
_OWN_PREFIXES = ("TM2_", "OPENMRS_", "MONGODB_")
# Read by the deployment's Dagster workspace (deploy/workspace.yaml), not by these settings.
_READ_ELSEWHERE = frozenset({"TM2_CODE_SERVER_HOST"})
# What Kubernetes puts into every pod for each Service of its namespace (TM2_CODE_SERVER_SERVICE_HOST,
# TM2_CODE_SERVER_PORT_4266_TCP_ADDR, ...), as Docker's container links did; none is a setting.
_SERVICE_LINK = re.compile(
    r"TM2(_\w+)?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?|NAME|ENV_\w+)"
)


def _refuse_unknown_names(entries: Mapping[str, str | None], prefixes: tuple[str, ...], where: str) -> None:
    """A misspelt variable would be ignored silently and its default used instead: with
    TM2_MONGODB_URI for MONGODB_URI, records meant for Atlas would go to the embedded store."""
    known = _READ_ELSEWHERE | {
        alias
        for field in Settings.model_fields.values()
        if isinstance(field.validation_alias, AliasChoices)
        for alias in field.validation_alias.choices
        if isinstance(alias, str)
    }
    unknown = sorted(name for name in entries if name.startswith(prefixes) and name not in known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise SettingsError(f"unknown setting(s) in {where}: {', '.join(hints)}")
