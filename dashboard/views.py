"""The dashboard page: rendered with the current figures, then refreshed by dashboard.js from DashboardDataApi."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.selectors import dashboard_snapshot, template_names
from emails.models import Email


@staff_member_required  # others go to the admin's login page
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "snapshot": dashboard_snapshot(),  # rendered, and given to dashboard.js as JSON (json_script)
        "statuses": Email.Status.values,
        "templates": template_names(),
    }
    return render(request, "dashboard/index.html", context)
