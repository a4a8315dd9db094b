"""Where our serializers step past DRF's public API for speed, all in one place. Each of these overrides a
method or attribute DRF keeps to itself (Serializer._readable_fields, _writable_fields, to_internal_value's
loop, run_validators), so each is checked by tests/emails/test_drf_speedups.py: the same bodies and rows give
exactly what stock DRF gives, and the names overridden still exist in DRF. A DRF upgrade that changes them
fails that test, not a client.

What they save, per email, is in the commit messages that brought them (a batch of 500 pays each 500 times)."""

from __future__ import annotations

import functools
from functools import cached_property

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.fields import SkipField, get_error_detail
from rest_framework.settings import api_settings

from emails.fields import RefusesUnknownFields, unknown_field_errors


@functools.cache
def reusable(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    """One instance per serializer class, used only through run_validation() and to_representation(),
    which keep no state on it: building an instance deep-copies every declared field."""
    return serializer_class()


def validated(serializer_class: type[serializers.Serializer], data) -> dict:
    """serializer_class(data=data).is_valid(raise_exception=True).validated_data, without building one.
    Raises DRF's ValidationError, with a dict as its detail as is_valid() gives it."""
    try:
        return reusable(serializer_class).run_validation(data)
    except ValidationError as exc:
        if isinstance(exc.detail, dict):
            raise
        # A body of `null`: an object naming the problem, as is_valid() words it and every other error answer is.
        detail = [ErrorDetail("No data provided", code="null")] if data is None else exc.detail
        raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: detail}) from None


class FieldsOnce:
    """For a serializer used through reusable(): its lists of fields made once, where DRF walks its field
    mapping again for every body or row."""

    @cached_property
    def _readable_fields(self) -> list:
        return [field for field in self.fields.values() if not field.write_only]

    @cached_property
    def _writable_fields(self) -> list:
        return [field for field in self.fields.values() if not field.read_only]

    @cached_property
    def _read_plan(self) -> list[tuple[str, str | None, serializers.Field]]:
        """Each readable field's name, the attribute (or key) it reads when its source is one plain name
        (None for dotted sources and fields that read for themselves), and the field."""
        plan = []
        for field in self._readable_fields:
            plain = len(field.source_attrs) == 1 and type(field).get_attribute is serializers.Field.get_attribute
            plan.append((field.field_name, field.source_attrs[0] if plain else None, field))
        return plan

    def to_representation(self, instance) -> dict:
        """DRF's Serializer.to_representation, reading a plain source directly: DRF's get_attribute also
        tests every value for being a callable to call (inspect's checks, ~25 per email). Our instances
        are Emails and stored rows (dicts), whose values are never callables."""
        is_row = isinstance(instance, dict)
        representation = {}
        for name, source, field in self._read_plan:
            if source is None:
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
            else:
                value = instance[source] if is_row else getattr(instance, source)
            representation[name] = None if value is None else field.to_representation(value)
        return representation


class GivenFieldsOnly(FieldsOnce, RefusesUnknownFields):
    """For an input serializer whose fields have no default and no validate_<name>, and which refuses
    unknown fields: DRF's validation loop over the fields a body gives and the required ones only. For each
    absent optional field (a dozen in a typical email) DRF raises and catches SkipField, a third of the time
    it takes to validate a body."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            return super().to_internal_value(data)  # DRF's error for a body that is not an object
        validated, errors = {}, {}
        for field in self._writable_fields:
            if field.field_name not in data and not field.required:
                continue
            try:
                validated[field.source] = field.run_validation(field.get_value(data))
            except serializers.ValidationError as exc:
                errors[field.field_name] = exc.detail
            except DjangoValidationError as exc:
                errors[field.field_name] = get_error_detail(exc)
        if not self._field_names.issuperset(data):  # named beside the known fields' errors, as at every level
            errors.update(unknown_field_errors(data, self._field_names, self.unknown_field_message))
        if errors:
            raise serializers.ValidationError(errors)
        return validated

    def run_validators(self, value):
        # DRF first gathers the defaults of read-only fields (there are none), for each body.
        if self.validators:
            super().run_validators(value)
