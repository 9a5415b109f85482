"""``airside report governance``: what an operator or a regulator reads before switching
Airside on: each gallery's purpose, legal bases, retention, size, recent purges and
erasures, and whether the audit chain verifies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, select_autoescape
from sqlalchemy import func, select

from airside.governance import access, audit
from airside.governance.principals import Principal
from airside.services import audit_service, calibration_service, gallery_calibration
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.services.gallery_view import view_of
from airside.store.tables import AuditRecord, Event, Gallery, LegalBasis, Template

# The actions that search or compare against a gallery's templates.
SEARCH_ACTIONS = ("identify", "verify.subject")


@dataclass
class GalleryGovernance:
    name: str
    purpose: str
    contract: str
    subjects: int
    templates: int
    bases: dict[str, int]
    bases_withdrawn: int
    bases_expired: int
    retention: str
    quality_bar: float
    fmr_target: float
    searchable_by: list[str]
    # Events about people of this gallery, and how many of them still keep a face crop.
    events: int = 0
    event_crops: int = 0
    # Thresholds (services/gallery_calibration.py): whether decisions against the gallery use
    # its own table, fitted on its subjects (when, on how many), else the deployment's or
    # the shipped one (fitted on other photos); and how many subjects a table of its own
    # needs for its FMR target.
    in_domain_table: bool = False
    table_fitted_at: str | None = None
    table_subjects: int | None = None
    subjects_needed_for_table: int = 0
    # Whether the gallery has a fair calibration of its own (services/calibration_service.py):
    # its table, fitted on the gallery's subjects, then sets the thresholds (in domain).
    own_fair_calibration: bool = False


@dataclass
class GovernanceReport:
    generated_at: str
    galleries: list[GalleryGovernance]
    recent_purges: list[dict[str, Any]]
    recent_erasures: list[dict[str, Any]]
    audit: dict[str, Any]
    activity: dict[str, int] = field(default_factory=dict)
    # Event retention in force and event counts overall (services/events/).
    events: dict[str, Any] = field(default_factory=dict)

    @property
    def without_in_domain_table(self) -> list[dict[str, Any]]:
        """Galleries that decide with a table fitted elsewhere (neither an FMR table nor a
        fair calibration of their own), and whether each holds enough subjects to fit its
        own."""
        return [
            {"gallery": g.name, "subjects": g.subjects, "needed": g.subjects_needed_for_table,
             "can_fit": g.subjects >= g.subjects_needed_for_table}
            for g in self.galleries
            if not (g.in_domain_table or g.own_fair_calibration)
        ]  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "galleries": [g.__dict__ for g in self.galleries],
            "recent_purges": self.recent_purges,
            "recent_erasures": self.recent_erasures,
            "audit": self.audit,
            "activity": self.activity,
            "events": self.events,
            "without_in_domain_table": self.without_in_domain_table,
        }


def _duration(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"


def _retention(g: Gallery) -> str:
    parts = []
    if g.retain_until is not None:
        parts.append(f"until {g.retain_until.isoformat()}")
    if g.retain_seconds is not None:
        parts.append(f"templates at most {_duration(g.retain_seconds)} old")
    return "; ".join(parts) or "until erased or consent withdrawn"


def build_report(app: Airside, principal: Principal, recent: int = 20) -> GovernanceReport:
    authorize(app, principal, "report.governance")
    now = datetime.now(UTC)
    st = app.settings
    with app.session() as s:
        ev_counts: dict[str | None, tuple[int, int]] = {
            g: (int(n), int(c or 0))
            for g, n, c in s.execute(
                select(Event.gallery, func.count(), func.count(Event.evidence)).group_by(
                    Event.gallery
                )
            )
        }
        rows: list[GalleryGovernance] = []
        for g in s.scalars(select(Gallery).order_by(Gallery.name)):
            n_t, n_s = s.execute(
                select(
                    func.count(Template.id), func.count(func.distinct(Template.subject_id))
                ).where(Template.gallery_id == g.id)
            ).one()
            bases = s.scalars(select(LegalBasis).where(LegalBasis.purpose == g.purpose)).all()
            kinds: dict[str, int] = {}
            withdrawn = expired = 0
            for b in bases:
                exp = b.expires_at
                if b.withdrawn_at is not None:
                    withdrawn += 1
                elif exp is not None and (exp if exp.tzinfo else exp.replace(tzinfo=UTC)) <= now:
                    expired += 1
                else:
                    kinds[b.kind] = kinds.get(b.kind, 0) + 1
            thresholds = gallery_calibration.status_in(s, view_of(g))
            own_fair = calibration_service.has_own_in(s, view_of(g))
            rows.append(
                GalleryGovernance(
                    g.name, g.purpose, g.contract_fingerprint, int(n_s), int(n_t), kinds,
                    withdrawn, expired, _retention(g), g.quality_bar, g.fmr_target,
                    access.who_may(s, SEARCH_ACTIONS, access.GalleryRef(g.name, g.purpose)),
                    *ev_counts.get(g.name, (0, 0)),
                    in_domain_table=thresholds.in_domain, table_fitted_at=thresholds.fitted_at,
                    table_subjects=thresholds.fitted_subjects,
                    subjects_needed_for_table=thresholds.subjects_needed,
                    own_fair_calibration=own_fair,
                )
            )  # fmt: skip

        def recent_of(action: str) -> list[dict[str, Any]]:
            recs = s.scalars(
                select(AuditRecord)
                .where(AuditRecord.action == action)
                .order_by(AuditRecord.seq.desc())
                .limit(recent)
            ).all()
            return [
                {"seq": r.seq, "ts": r.ts, "actor": r.actor, "action": r.action,
                 "gallery": r.gallery, "decision": r.decision, "result": json.loads(r.result)}
                for r in recs
            ]  # fmt: skip

        purges = [p for p in recent_of("purge") if p["decision"] == "purged"]
        for p in purges:
            p["result"].pop("template_ids", None)
        erasures = sorted(
            recent_of("subject.erase") + recent_of("consent.withdraw"), key=lambda e: -e["seq"]
        )[:recent]
        activity = dict(
            s.execute(select(AuditRecord.action, func.count()).group_by(AuditRecord.action)).all()
        )
        chain = audit_service.verify_in(app, s)
        audit.append(s, principal, "report.governance", decision="generated")
    return GovernanceReport(
        generated_at=now.isoformat(timespec="seconds"),
        galleries=rows,
        recent_purges=purges,
        recent_erasures=erasures,
        audit=chain.as_dict(),
        activity={k: int(v) for k, v in activity.items()},
        events={
            "retention_days": st.event_retention_days,
            "crop_retention_days": st.event_crop_retention_days,
            "keep_crops": st.keep_event_crops,
            "crops_bounded_by_gallery_retention": True,
            "total": sum(n for n, _ in ev_counts.values()),
            "with_crop": sum(c for _, c in ev_counts.values()),
            "system": ev_counts.get(None, (0, 0))[0],
        },
    )


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Airside governance report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#1b1b1b}
table{border-collapse:collapse;margin:1rem 0;width:100%}
td,th{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}.ok{color:#0a6b2d;font-weight:600}.bad{color:#a40000;font-weight:600}
</style></head><body>
<h1>Airside governance report</h1>
<p>Generated {{ r.generated_at }}.
Audit chain: {% if r.audit.ok %}<span class="ok">intact</span>{% else %}
<span class="bad">BROKEN ({{ r.audit.problems|length }} problems)</span>{% endif %},
{{ r.audit.records }} records{% if r.audit.checkpoints is defined %},
{{ r.audit.checkpoints }} signed checkpoints{% endif %}.</p>
<h2>Galleries</h2>
<table><tr><th>gallery</th><th>purpose</th><th>subjects / templates</th>
<th>legal bases in force</th><th>withdrawn / expired</th><th>retention</th>
<th>decision rule</th><th>who may search</th></tr>
{% for g in r.galleries %}<tr><td>{{ g.name }}</td><td>{{ g.purpose }}</td>
<td>{{ g.subjects }} / {{ g.templates }}</td>
<td>{% for k, n in g.bases.items() %}{{ k }}: {{ n }}<br>{% else %}none{% endfor %}</td>
<td>{{ g.bases_withdrawn }} / {{ g.bases_expired }}</td><td>{{ g.retention }}</td>
<td>FMR {{ g.fmr_target }}, quality bar {{ g.quality_bar }}</td>
<td>{{ g.searchable_by|join(", ") }}</td></tr>
{% else %}<tr><td colspan="8">no galleries</td></tr>{% endfor %}</table>
<h2>Thresholds</h2>
<p>A gallery decides with its own FMR table when one was fitted on its subjects (in the
domain it decides in); otherwise with the deployment's or the one shipped with the model,
fitted on other photos, whose FMR can be several times its label here. A gallery's own fair
calibration, fitted on its subjects, sets its thresholds before either.</p>
<table><tr><th>gallery</th><th>table</th><th>subjects now</th><th>fitted on</th></tr>
{% for g in r.galleries %}<tr><td>{{ g.name }}</td>
<td>{% if g.in_domain_table %}<span class="ok">its own</span> (fitted {{ g.table_fitted_at }})
{% else %}<span class="bad">none of its own</span>{% endif %}{% if g.own_fair_calibration %};
<span class="ok">its own fair calibration</span>, whose table decides{% endif %}</td>
<td>{{ g.subjects }}</td>
<td>{% if g.in_domain_table %}{{ g.table_subjects }} subjects{% elif g.subjects >=
g.subjects_needed_for_table %}enough subjects to fit one ({{ g.subjects_needed_for_table }}
needed){% else %}too few subjects to fit one ({{ g.subjects_needed_for_table }}
needed){% endif %}</td></tr>
{% else %}<tr><td colspan="4">no galleries</td></tr>{% endfor %}</table>
<h2>Events</h2>
<p>{{ r.events.total }} events ({{ r.events.system }} system events), {{ r.events.with_crop }}
with a face crop. Events are kept {{ r.events.retention_days }} days; face crops
{% if r.events.keep_crops %}at most {{ r.events.crop_retention_days }} days and never longer
than their gallery's retention{% else %}not at all{% endif %}.</p>
<table><tr><th>gallery</th><th>events</th><th>with a face crop</th></tr>
{% for g in r.galleries %}<tr><td>{{ g.name }}</td><td>{{ g.events }}</td>
<td>{{ g.event_crops }}</td></tr>{% endfor %}</table>
<h2>Recent purges</h2>
<table><tr><th>record</th><th>time</th><th>gallery</th><th>templates</th><th>events / crops</th>
<th>rule</th></tr>
{% for p in r.recent_purges %}<tr><td>{{ p.seq }}</td><td>{{ p.ts }}</td><td>{{ p.gallery }}</td>
<td>{{ p.result.templates }}</td>
<td>{% if p.result.events is defined %}{{ p.result.events }} /
{{ p.result.event_crops }}{% endif %}</td>
<td>{{ p.result.rule }}</td></tr>
{% else %}<tr><td colspan="6">none</td></tr>{% endfor %}</table>
<h2>Recent erasures and withdrawals</h2>
<p>The log names no one here: each row keeps the digest of the signed receipt given to the
data subject (verifiable offline with the installation's public key), which only its holder
can match.</p>
<table><tr><th>record</th><th>time</th><th>by</th><th>action</th><th>templates</th>
<th>events</th><th>galleries</th><th>receipt</th></tr>
{% for e in r.recent_erasures %}<tr><td>{{ e.seq }}</td><td>{{ e.ts }}</td><td>{{ e.actor }}</td>
<td>{{ e.action }}</td><td>{{ e.result.templates }}</td><td>{{ e.result.events }}</td>
<td>{{ e.result.galleries|join(", ") }}</td><td><code>{{ e.result.receipt }}</code></td></tr>
{% else %}<tr><td colspan="8">none</td></tr>{% endfor %}</table>
<h2>Activity (audit records by action)</h2>
<table>{% for k, n in r.activity.items() %}<tr><td>{{ k }}</td><td>{{ n }}</td></tr>
{% endfor %}</table>
</body></html>
"""


def render_html(report: GovernanceReport) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(_TEMPLATE).render(r=report.as_dict())
