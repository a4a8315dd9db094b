"""The JSON every API answers with."""

from __future__ import annotations

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """DRF's, written as UTF-8 whenever it can be. An answer that quotes what a client sent may hold a lone
    surrogate (JSON's "\\ud800" escape reads as one), which UTF-8 cannot encode: such an answer is written with
    its non-ASCII characters escaped instead, the same JSON, rather than failing as a 500 (after a batch was
    stored, the client would have been told it was not)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True  # this request's renderer only: DRF makes one per request
            return super().render(data, accepted_media_type, renderer_context)
