from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from oauth2_provider.compat import login_not_required

from example_project.demo.flow import (
    NATIVE_CLIENT_ID,
    NATIVE_EXAMPLE_REDIRECT_URI,
    WEB_CLIENT_ID,
    native_authorization_example,
)


# Public also on a site with LoginRequiredMiddleware: the page tells visitors how to log in.
@login_not_required
@never_cache  # each visit gets its own PKCE verifier; a cached page would show a stale one
def home(request: HttpRequest) -> HttpResponse:
    """Explain the demo and hand out a fresh authorization request for the native client."""
    example = native_authorization_example(request.build_absolute_uri("/"))
    return render(
        request,
        "home.html",
        {
            "example": example,
            "native_client_id": NATIVE_CLIENT_ID,
            "native_redirect_uri": NATIVE_EXAMPLE_REDIRECT_URI,
            "web_client_id": WEB_CLIENT_ID,
        },
    )
