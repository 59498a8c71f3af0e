"""The request body parsers of the REST API: DRF's, made safe against hostile JSON."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 to nesting too deep for Python's decoder.

    ``json`` raises RecursionError, not ValueError, for a few kilobytes of ``[[[[``,
    and DRF only turns ValueError into a parse error: without this, a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None


#: What the API reads: JSON, and the two form encodings a browser sends.
API_PARSERS = [BoundedJSONParser, FormParser, MultiPartParser]
