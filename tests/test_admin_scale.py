"""The admin at scale (issue 12): flat query counts, bounded counting that says so, paged lists.

The pinned counts (tests/test_admin.py) hold for filtered and searched changelists too;
past the count limit a changelist says "more than N" (on PostgreSQL, unfiltered,
"about N" from the planner's estimate) and pages only that far; the client filter costs
one small query and lists a bounded number of clients; the per-user page pages both
of its lists. Runs on SQLite and on PostgreSQL (DATABASE_URL).
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.db import connection
from django.urls import reverse
from oauth2_provider.models import get_application_model

from offline_access.admin import ClientFilter
from offline_access.models import Consent, OfflineTokenFamily

from .test_admin import (
    CONSENT_CHANGELIST_QUERIES,
    FAMILY_CHANGELIST_QUERIES,
    USER_OVERVIEW_QUERIES,
    populate,
    populate_user,
    result_pks,
)

Application = get_application_model()

CONSENTS = "admin:offline_access_consent_changelist"
FAMILIES = "admin:offline_access_offlinetokenfamily_changelist"


@pytest.mark.parametrize("rows", [3, 60])
@pytest.mark.parametrize(
    ("changelist", "query", "expected"),
    [
        (CONSENTS, "state=active", CONSENT_CHANGELIST_QUERIES),
        (CONSENTS, "state=expired&kind__exact=enduring", CONSENT_CHANGELIST_QUERIES),
        (CONSENTS, "application__id__exact={client}", CONSENT_CHANGELIST_QUERIES),
        (CONSENTS, "q=u-", CONSENT_CHANGELIST_QUERIES),
        (CONSENTS, "q=client+example", CONSENT_CHANGELIST_QUERIES),
        (CONSENTS, "granted_at__gte=2000-01-01T00:00:00%2B00:00", CONSENT_CHANGELIST_QUERIES),
        (FAMILIES, "state=ended", FAMILY_CHANGELIST_QUERIES),
        (FAMILIES, "state=all&key_bound=yes", FAMILY_CHANGELIST_QUERIES),
        (FAMILIES, "application__id__exact={client}", FAMILY_CHANGELIST_QUERIES),
        (FAMILIES, "q=u-", FAMILY_CHANGELIST_QUERIES),
    ],
)
def test_filtered_and_searched_changelists_keep_their_query_count(
    admin_client, django_assert_num_queries, changelist, query, expected, rows
):
    populate(rows)
    client = Application.objects.order_by("pk").first().pk
    url = reverse(changelist) + "?" + query.format(client=client)

    with django_assert_num_queries(expected):
        response = admin_client.get(url)

    assert response.status_code == 200
    cl = response.context["cl"]
    assert len(cl.result_list) == min(cl.result_count, cl.list_per_page)
    if query.startswith("q=u-"):
        assert cl.result_count >= rows // 5  # the search finds rows (of users u-...)


def test_search_needs_every_term_and_finds_the_recorded_name_of_a_deleted_client(admin_client):
    populate(3)
    consent = Consent.objects.select_related("user", "application").order_by("pk").first()
    url = reverse(CONSENTS)
    both = f"?q={consent.user.username}+{consent.application.client_id}"
    assert result_pks(admin_client.get(url + both)) == {consent.pk}
    assert result_pks(admin_client.get(url + f"?q={consent.user.username}+no-such-client")) == set()
    # A deleted client: only the consent's recorded client id names it.
    Consent.objects.filter(pk=consent.pk).update(application=None, client_id="gone-client-7")
    assert result_pks(admin_client.get(url + "?q=gone-client")) == {consent.pk}


@pytest.fixture
def small_limit(monkeypatch):
    """The consents screen counts at most 20 rows and shows 10 a page."""
    consent_admin = admin.site._registry[Consent]
    monkeypatch.setattr(consent_admin, "list_count_limit", 20)
    monkeypatch.setattr(consent_admin, "list_per_page", 10)
    return consent_admin


def paginator_text(response) -> str:
    html = response.content.decode()
    return " ".join(html.split('<p class="paginator">', 1)[1].split("</p>", 1)[0].split())


def test_changelist_past_the_count_limit_says_so_and_pages_that_far(small_limit, admin_client):
    populate(60)  # 30 interactive
    url = reverse(CONSENTS)
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        with connection.cursor() as cursor:  # the planner's estimate, as autovacuum keeps it
            cursor.execute(f"ANALYZE {Consent._meta.db_table}")

    response = admin_client.get(url)
    cl = response.context["cl"]
    assert (cl.paginator.count, cl.paginator.num_pages, len(cl.result_list)) == (20, 2, 10)
    total = "about 60 consents" if postgresql else "more than 20 consents"
    text = paginator_text(response)
    assert total in text
    assert "The pages list the first 20: search or filter to narrow the list." in text
    assert response.context["selection_note_all"] == f"All {total} selected"
    assert f"Select all {total}" in response.content.decode()
    assert "60 consents" not in text.replace("about 60", "")

    assert len(admin_client.get(url + "?p=2").context["cl"].result_list) == 10
    assert admin_client.get(url + "?p=3").status_code == 302  # past the limit: Django's ?e=1

    # Filtered past the limit: no estimate (it would count the whole table), "more than".
    filtered = admin_client.get(url + "?kind__exact=interactive")
    assert "more than 20 consents" in paginator_text(filtered)
    # Within the limit the count is exact, as Django's.
    expected = Consent.objects.in_state(Consent.Status.EXPIRED).filter(kind=Consent.Kind.ENDURING).count()
    assert 1 < expected <= 20
    narrow = admin_client.get(url + "?state=expired&kind__exact=enduring")
    assert narrow.context["cl"].result_count == expected
    assert narrow.context["cl"].paginator.is_exact
    assert f"{expected} consents" in paginator_text(narrow)
    assert f"{expected} consents (" in narrow.content.decode()  # beside the search box, with "Show all"


def test_client_filter_lists_clients_with_rows_at_most_its_limit_and_the_selected_one(
    monkeypatch, admin_client
):
    populate(5)
    idle = Application.objects.create(
        name="AAA idle client",
        client_id=f"idle-{uuid.uuid4().hex[:6]}",
        client_type="public",
        authorization_grant_type="authorization-code",
        redirect_uris="https://client.example/callback",
    )
    monkeypatch.setattr(ClientFilter, "limit", 2)
    with_rows = list(Application.objects.exclude(pk=idle.pk).order_by("name", "pk"))

    def choices(query=""):
        response = admin_client.get(reverse(CONSENTS) + query)
        spec = next(spec for spec in response.context["cl"].filter_specs if isinstance(spec, ClientFilter))
        return [pk for pk, _name in spec.lookup_choices]

    assert choices() == [with_rows[0].pk, with_rows[1].pk]  # no idle client, by name, two
    last = with_rows[-1]
    assert choices(f"?application__id__exact={last.pk}") == [last.pk, with_rows[0].pk]
    # Not a client id: Django's answer to a bad filter (back to the list with ?e=1), not an error.
    response = admin_client.get(reverse(CONSENTS) + "?application__id__exact=not-a-number")
    assert response.status_code == 302 and response["Location"].endswith("?e=1")


def test_user_page_pages_both_lists_with_links_that_keep_the_other_page(
    admin_client, user, django_assert_num_queries
):
    populate_user(user, 250)  # 250 consents, each with a device
    url = reverse("admin:offline_access_consent_user", args=[user.pk])

    with django_assert_num_queries(USER_OVERVIEW_QUERIES):
        first = admin_client.get(url)

    assert (len(first.context["consents"]), len(first.context["families"])) == (100, 100)
    html = first.content.decode()
    assert "Devices 1–100 of 250" in html
    assert "Consents 1–100 of 250" in html
    assert 'href="?devices_page=2"' in html and 'href="?devices_page=3"' in html

    with django_assert_num_queries(USER_OVERVIEW_QUERIES):
        later = admin_client.get(url + "?consents_page=2&devices_page=3")
    assert (len(later.context["consents"]), len(later.context["families"])) == (100, 50)
    html = later.content.decode()
    assert "Devices 201–250 of 250" in html
    assert 'href="?consents_page=2&amp;devices_page=1"' in html  # the consents stay on page 2
    newest = OfflineTokenFamily.objects.filter(user=user).order_by("-created_at", "-pk")
    assert [f.pk for f in later.context["families"]] == [f.pk for f in newest[200:]]

    # A bad page number is never an error: the first page, or the last one past the end.
    assert admin_client.get(url + "?devices_page=abc").context["families"].number == 1
    assert admin_client.get(url + "?devices_page=99").context["families"].number == 3


@pytest.mark.parametrize(("changelist", "sortable"), [(CONSENTS, "granted_at"), (FAMILIES, "created_at")])
def test_only_index_served_columns_sort(admin_client, changelist, sortable):
    populate(3)
    html = admin_client.get(reverse(changelist)).content.decode()
    assert html.count('class="sortable') == 1
    assert f'class="sortable column-{sortable}' in html
    # A hand-made ?o= naming a per-row subquery column (or a joined name) does not sort by it:
    # at a million rows that would evaluate it for every row before the first page.
    cl = admin_client.get(reverse(changelist)).context["cl"]
    for index in range(1, len(cl.list_display)):
        ordered = admin_client.get(reverse(changelist) + f"?o={index}").context["cl"]
        fields = [str(field).lstrip("-") for field in ordered.queryset.query.order_by]
        assert set(fields) <= {
            "granted_at",
            "created_at",
            "pk",
            "id",
            "kind",
            "scope",
            "expires_at",
            "application",
        }, fields
        assert "live_tokens" not in str(ordered.queryset.query.order_by)


def rows_of(response) -> dict[int, str]:
    """Each changelist row's HTML, by primary key."""
    rows = {}
    for row in response.content.decode().split("<tr")[1:]:
        if 'name="_selected_action" value="' in row:
            rows[int(row.split('name="_selected_action" value="', 1)[1].split('"', 1)[0])] = row
    return rows


def cell(row: str, column: str) -> str:
    return row.split(f'class="field-{column}', 1)[1].split(">", 1)[1].split("</t", 1)[0]


def test_consent_changelist_counts_live_tokens_up_to_its_bound(monkeypatch, admin_client, user):
    from offline_access.admin import consents as consent_screen

    from .factories import ConsentFactory
    from .test_admin import add_token_families

    monkeypatch.setattr(consent_screen, "LIVE_TOKENS_SHOWN", 2)
    crowded, exact, none = (ConsentFactory(user=user) for _ in range(3))  # three clients
    add_token_families(crowded, 5)
    add_token_families(exact, 2)

    response = admin_client.get(reverse(CONSENTS))

    live = {row.pk: row.live_tokens for row in response.context["cl"].result_list}
    # Counted no further than the bound + 1 (MySQL and MariaDB count them all: see with_usage).
    assert live == {crowded.pk: 5 if connection.vendor == "mysql" else 3, exact.pk: 2, none.pk: 0}
    rows = rows_of(response)
    assert cell(rows[crowded.pk], "live_tokens") == "2+"
    assert cell(rows[exact.pk], "live_tokens") == "2"
    assert cell(rows[none.pk], "live_tokens") == "0"
    # The per-user page counts them all.
    page = admin_client.get(reverse("admin:offline_access_consent_user", args=[user.pk]))
    assert {consent.pk: consent.live_tokens for consent in page.context["consents"]} == {
        crowded.pk: 5,
        exact.pk: 2,
        none.pk: 0,
    }


def test_consent_changelist_rows_link_to_the_consent_and_to_the_users_page(admin_client):
    populate(3)
    response = admin_client.get(reverse(CONSENTS))
    html = response.content.decode()
    rows = rows_of(response)
    assert rows
    for consent in Consent.objects.filter(pk__in=rows).select_related("user"):
        row = rows[consent.pk]
        user_page = reverse("admin:offline_access_consent_user", args=[consent.user_id])
        assert f'<td class="field-user_link"><a href="{user_page}">{consent.user.username}</a></td>' in row
        change = reverse("admin:offline_access_consent_change", args=[consent.pk])
        assert f'<th class="field-kind"><a href="{change}">{consent.get_kind_display()}</a></th>' in row
    # No link inside a link: a browser drops the outer one (the consent's own page).
    assert "<a href" not in "".join(part.split("</a>", 1)[0] for part in html.split("<a href")[1:])


def test_token_family_changelist_links_each_device_to_its_consent_and_user(
    admin_client, django_assert_num_queries
):
    populate(3)
    with django_assert_num_queries(FAMILY_CHANGELIST_QUERIES):
        response = admin_client.get(reverse(FAMILIES) + "?state=all")
    rows = rows_of(response)
    families = OfflineTokenFamily.objects.filter(pk__in=rows)
    assert families.exclude(consent=None).exists()
    for family in families:
        row = rows[family.pk]
        change = reverse("admin:offline_access_offlinetokenfamily_change", args=[family.pk])
        assert f'<th class="field-family"><a href="{change}?_changelist_filters=state%3Dall">' in row
        user_page = reverse("admin:offline_access_consent_user", args=[family.user_id])
        assert f'<a href="{user_page}">' in cell(row, "user_link")
        if family.consent_id is not None:
            consent = reverse("admin:offline_access_consent_change", args=[family.consent_id])
            assert cell(row, "consent_link") == f'<a href="{consent}">#{family.consent_id}</a>'


def test_changelist_links_follow_the_script_prefix_of_each_request(admin_client):
    """The links are reversed once and reused: never with another request's prefix."""
    from django.urls import set_script_prefix

    populate(3)
    consent = Consent.objects.filter(kind=Consent.Kind.INTERACTIVE).order_by("-granted_at", "-pk").first()
    changelist = reverse(CONSENTS)
    plain = rows_of(admin_client.get(changelist))[consent.pk]
    try:
        set_script_prefix("/idp/")  # as a WSGI server mounting the site under /idp sets it
        mounted = rows_of(admin_client.get(changelist))[consent.pk]
    finally:
        set_script_prefix("/")
    for name, args in [
        ("admin:offline_access_consent_change", [consent.pk]),
        ("admin:offline_access_consent_user", [consent.user_id]),
    ]:
        url = reverse(name, args=args)
        assert f'href="{url}"' in plain
        assert f'href="/idp{url}"' in mounted and f'href="{url}"' not in mounted


def test_url_for_pk_is_reverse():
    from django.urls import set_script_prefix

    from offline_access.admin.links import url_for_pk

    name = "admin:offline_access_consent_change"
    for pk in (1, 42, 10**12, -3):
        assert url_for_pk(name, pk) == reverse(name, args=[pk])
    # Not an integer: reverse()'s own quoting, every time.
    assert url_for_pk(name, "a b/c") == reverse(name, args=["a b/c"])
    try:
        set_script_prefix("/mounted/")
        assert url_for_pk(name, 7) == reverse(name, args=[7])
        assert url_for_pk(name, 7).startswith("/mounted/admin/")
    finally:
        set_script_prefix("/")


def test_token_family_changelist_counts_at_most_a_thousand(admin_client):
    populate(3)
    paginator = admin_client.get(reverse(FAMILIES)).context["cl"].paginator
    assert paginator.limit == 1_000


def test_token_family_changelist_states_and_expiries_follow_each_clients_policy(admin_client, user):
    from datetime import timedelta

    from offline_access.models import ClientPolicy

    from .factories import ConsentFactory
    from .test_admin import add_token_families

    strict, default = ConsentFactory(user=user), ConsentFactory(user=user)
    ClientPolicy.objects.create(
        application=strict.application,
        refresh_token_idle_timeout=timedelta(days=1),
        refresh_token_absolute_lifetime=timedelta(days=10),
    )
    add_token_families(strict, 1)
    add_token_families(default, 2)
    ended = OfflineTokenFamily.objects.filter(consent=default).order_by("pk").first()
    OfflineTokenFamily.objects.filter(pk=ended.pk).update(ended_at=ended.created_at)
    family_admin = admin.site._registry[OfflineTokenFamily]
    url = reverse(FAMILIES) + "?state=all"

    response = admin_client.get(url)

    rows = response.context["cl"].result_list
    assert len(rows) == 3
    for family in rows:
        idle, absolute = (1, 10) if family.consent_id == strict.pk else (30, 365)
        assert family_admin.idle_expires(family) == family.last_refreshed + timedelta(days=idle)
        assert family_admin.absolute_expires(family) == family.created_at + timedelta(days=absolute)
    cells = {pk: cell(row, "state") for pk, row in rows_of(response).items()}
    assert cells == {family.pk: "Ended" if family.pk == ended.pk else "Live" for family in rows}
    german = rows_of(admin_client.get(url, HTTP_ACCEPT_LANGUAGE="de"))
    assert {pk: cell(row, "state") for pk, row in german.items()} == {
        pk: {"Ended": "Beendet", "Live": "Gültig"}[state] for pk, state in cells.items()
    }


def test_url_for_pk_reverses_each_key_where_a_pattern_refuses_the_marker(settings):
    from django.urls import NoReverseMatch, clear_url_caches

    from offline_access.admin.links import url_for_pk

    settings.ROOT_URLCONF = "tests.urls_short_ids"
    clear_url_caches()
    try:
        assert url_for_pk("short", 42) == reverse("short", args=[42]) == "/short/42/"
        with pytest.raises(NoReverseMatch):
            url_for_pk("short", 12345)
    finally:
        clear_url_caches()
