"""The templates API: a key's own templates, made, listed, shown, replaced, deleted; the shared ones listed and
shown, read-only."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from emails import schema
from emails.drf_speedups import FieldsOnce, reusable, validated
from emails.fields import NulFreeTextField, RefusesUnknownFields, StrictCharField, TemplateNameField, UtcDateTimeField
from emails.services.templates import (
    MAX_NAME_LENGTH,
    MAX_SUBJECT_LENGTH,
    template_create,
    template_delete,
    template_get,
    template_list,
    template_replace,
)


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT_LENGTH, "pattern": schema.ONE_LINE})
class TemplateSubjectField(StrictCharField):
    def __init__(self, **kwargs) -> None:
        super().__init__(single_line=True, max_length=MAX_SUBJECT_LENGTH, **kwargs)


class TemplateBodyField(NulFreeTextField):
    def __init__(self, **kwargs) -> None:
        # A body's whitespace is the email's: kept as written.
        super().__init__(
            required=False,
            allow_blank=True,
            default="",
            trim_whitespace=False,
            max_length=settings.MAIL_MAX_EMAIL_BYTES,
            **kwargs,
        )


class TemplateDetailApi(APIView):
    @extend_schema_serializer(component_name="Template")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """A stored template, as emails that name it in `template` render it."""

        name = serializers.CharField(help_text="What an email gives as `template`.")
        subject = serializers.CharField()
        text = serializers.CharField(help_text="The plain-text body; empty: none.")
        html = serializers.CharField(help_text="The HTML body; empty: none.")
        shared = serializers.SerializerMethodField(
            help_text="true: an operator's, for every API key, read-only here; false: the key's own."
        )
        updated_at = UtcDateTimeField(help_text="When it was made or last replaced, in UTC.")

        def get_shared(self, template) -> bool:
            return template.api_key_id is None

    @extend_schema_serializer(component_name="TemplateReplace")
    class InputSerializer(RefusesUnknownFields, serializers.Serializer):
        """A template's new parts, all of them: what is left out is empty. Any other field is a 400 naming it."""

        subject = TemplateSubjectField(help_text=schema.TEMPLATE_SUBJECT)
        text = TemplateBodyField(help_text=schema.TEMPLATE_TEXT)
        html = TemplateBodyField(help_text=schema.TEMPLATE_HTML)

    @extend_schema(
        operation_id="template_get",
        summary="A template",
        description=schema.TEMPLATE_GET,
        parameters=[schema.TEMPLATE_NAME],
        responses={
            200: OpenApiResponse(OutputSerializer, description="The template."),
            404: schema.TEMPLATE_NOT_FOUND,
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request, name):
        template = template_get(api_key=request.auth, name=name) if len(name) <= MAX_NAME_LENGTH else None
        if template is None:
            raise NotFound("No such template.")
        return Response(reusable(self.OutputSerializer).to_representation(template))

    @extend_schema(
        operation_id="template_replace",
        summary="Replace a template of the key's",
        description=schema.TEMPLATE_REPLACE,
        request=InputSerializer,
        parameters=[schema.TEMPLATE_NAME],
        responses={
            200: OpenApiResponse(OutputSerializer, description="Replaced: the template as it is now."),
            404: schema.TEMPLATE_NOT_YOURS,
            **schema.TEMPLATE_WRITE_ERRORS,
        },
        examples=[schema.TEMPLATE_REPLACE_EXAMPLE],
    )
    def put(self, request, name):
        fields = validated(self.InputSerializer, request.data)
        template = template_replace(api_key=request.auth, name=name, **fields) if len(name) <= MAX_NAME_LENGTH else None
        if template is None:
            raise NotFound(f"No template of yours named {name[:MAX_NAME_LENGTH]!r}.")
        return Response(reusable(self.OutputSerializer).to_representation(template))

    @extend_schema(
        operation_id="template_delete",
        summary="Delete a template of the key's",
        description=schema.TEMPLATE_DELETE,
        parameters=[schema.TEMPLATE_NAME],
        responses={
            204: OpenApiResponse(description="Deleted: emails that name it get the shared one of its name, if any."),
            404: schema.TEMPLATE_NOT_YOURS,
            **schema.errors(401, 429, 503),
        },
    )
    def delete(self, request, name):
        if len(name) > MAX_NAME_LENGTH or not template_delete(api_key=request.auth, name=name):
            raise NotFound(f"No template of yours named {name[:MAX_NAME_LENGTH]!r}.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateCreateApi(APIView):
    @extend_schema_serializer(component_name="TemplateCreate")
    class InputSerializer(TemplateDetailApi.InputSerializer):
        """A template to make for the key. Any other field is a 400 naming it."""

        name = TemplateNameField(help_text=schema.TEMPLATE_NAME_FIELD)

    @extend_schema(
        operation_id="template_create",
        summary="Make a template of the key's",
        description=schema.TEMPLATE_CREATE,
        request=InputSerializer,
        parameters=[schema.TEMPLATE_LOCATION],
        responses={
            201: OpenApiResponse(TemplateDetailApi.OutputSerializer, description="Made: the template."),
            **schema.TEMPLATE_WRITE_ERRORS,
        },
        examples=[schema.TEMPLATE_CREATE_EXAMPLE],
    )
    def post(self, request):
        fields = validated(self.InputSerializer, request.data)
        template = template_create(api_key=request.auth, **fields)
        return Response(
            reusable(TemplateDetailApi.OutputSerializer).to_representation(template),
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/templates/{template.name}"},
        )


class TemplateListApi(APIView):
    @extend_schema(
        operation_id="template_list",
        summary="The key's templates and the shared ones, by name",
        description=schema.TEMPLATE_LIST,
        responses={
            200: OpenApiResponse(
                description="The templates the key may render, by name.",
                response=inline_serializer(
                    "TemplateList",
                    {"results": TemplateDetailApi.OutputSerializer(many=True, help_text="By name; at most 500.")},
                ),
            ),
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request):
        summary = reusable(TemplateDetailApi.OutputSerializer).to_representation
        return Response({"results": [summary(template) for template in template_list(api_key=request.auth)]})


# /templates is one path for two operations: GET lists, POST creates. A comment, not a docstring: the schema
# would show a view's docstring as both operations' description.
class TemplateCollectionApi(TemplateListApi, TemplateCreateApi):
    pass
