"""Initial registry schema: runs, tags, datasets, metrics, evals, artifacts.

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts():
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    _runs()
    _datasets()
    _results()


def _runs() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts()),
        sa.Column("ended_at", _ts()),
        sa.Column("heartbeat_at", _ts()),
        sa.Column("pid", sa.Integer()),
        sa.Column("proc_start", sa.BigInteger()),
        sa.Column("hostname", sa.String(255)),
        sa.Column("config", sa.JSON()),
        sa.Column("base_model", sa.String(512)),
        sa.Column("base_model_identity", sa.String(512)),
        sa.Column("stage", sa.String(32)),
        sa.Column("method", sa.String(32)),
        sa.Column("output_dir", sa.Text()),
        sa.Column("parent_run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("group_id", sa.String(64)),
        sa.Column("error", sa.Text()),
    )
    for col in ("kind", "status", "base_model", "parent_run_id", "group_id"):
        op.create_index(f"ix_runs_{col}", "runs", [col])
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag"])


def _datasets() -> None:
    op.create_table(
        "datasets",
        sa.Column("fingerprint", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(512)),
        sa.Column("n_records", sa.Integer()),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_table(
        "run_datasets",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("fingerprint", sa.String(128), sa.ForeignKey("datasets.fingerprint"), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(512)),
        sa.Column("n_records", sa.Integer()),
    )
    op.create_index("ix_run_datasets_fingerprint", "run_datasets", ["fingerprint"])


def _results() -> None:
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float()),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("logged_at", _ts(), nullable=False),
    )
    op.create_index("ix_metrics_run_key_step", "metrics", ["run_id", "key", "step"])
    op.create_table(
        "evals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_index("ix_evals_run_id", "evals", ["run_id"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])


def downgrade() -> None:
    for table in ("artifacts", "evals", "metrics", "run_datasets", "datasets", "run_tags", "runs"):
        op.drop_table(table)
