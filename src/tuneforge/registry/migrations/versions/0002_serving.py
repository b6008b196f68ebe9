"""Serving tables: API keys, files, fine-tuning jobs, job events and checkpoints, logged completions, feedback.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts():
    return sa.DateTime(timezone=True)


def _id(length: int = 40):
    return sa.Column("id", sa.String(length), primary_key=True)


def _serial():
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def _created():
    return sa.Column("created_at", _ts(), nullable=False)


def upgrade() -> None:
    _keys_and_files()
    _jobs()
    _completions()


def _keys_and_files() -> None:
    op.create_table(
        "api_keys", _id(),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        _created(),
        sa.Column("last_used_at", _ts()),
        sa.Column("revoked_at", _ts()),
    )
    op.create_index("ix_api_keys_project", "api_keys", ["project"])
    op.create_table(
        "files", _id(),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_details", sa.Text()),
        sa.Column("data_format", sa.String(32)),
        sa.Column("n_rows", sa.Integer()),
        _created(),
    )
    op.create_index("ix_files_project", "files", ["project"])


def _jobs() -> None:
    op.create_table(
        "ft_jobs", _id(),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("training_file", sa.String(40), nullable=False),
        sa.Column("validation_file", sa.String(40)),
        sa.Column("suffix", sa.String(64)),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON()),
        sa.Column("method", sa.JSON(), nullable=False),
        sa.Column("overrides", sa.JSON()),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("requested", sa.String(16)),
        sa.Column("error", sa.JSON()),
        sa.Column("fine_tuned_model", sa.String(700)),
        sa.Column("trained_tokens", sa.BigInteger()),
        sa.Column("estimated_finish", sa.BigInteger()),
        sa.Column("result_files", sa.JSON()),
        sa.Column("resolved", sa.JSON()),
        sa.Column("run_dir", sa.Text()),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("executor", sa.String(16)),
        sa.Column("worker_ref", sa.String(255)),
        sa.Column("worker_pid", sa.Integer()),
        sa.Column("worker_host", sa.String(255)),
        sa.Column("worker_start", sa.BigInteger()),
        sa.Column("heartbeat_at", _ts()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _created(),
        sa.Column("started_at", _ts()),
        sa.Column("finished_at", _ts()),
    )
    op.create_index("ix_ft_jobs_project_created", "ft_jobs", ["project", "created_at"])
    op.create_index("ix_ft_jobs_status", "ft_jobs", ["status"])
    op.create_index("ix_ft_jobs_fine_tuned_model", "ft_jobs", ["fine_tuned_model"])
    op.create_table(
        "ft_job_events", _serial(),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("ft_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON()),
        _created(),
    )
    op.create_index("ix_ft_job_events_job_id", "ft_job_events", ["job_id"])
    op.create_table(
        "ft_checkpoints", _serial(),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("ft_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("model_id", sa.String(700), nullable=False),
        sa.Column("metrics", sa.JSON()),
        _created(),
    )
    op.create_index("ix_ft_checkpoints_job_id", "ft_checkpoints", ["job_id"])
    op.create_index("ix_ft_checkpoints_model_id", "ft_checkpoints", ["model_id"])


def _completions() -> None:
    op.create_table(
        "completions", _id(64),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("model", sa.String(700), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        _created(),
    )
    op.create_index("ix_completions_project", "completions", ["project"])
    op.create_index("ix_completions_model", "completions", ["model"])
    op.create_table(
        "feedback", _serial(),
        sa.Column("completion_id", sa.String(64), sa.ForeignKey("completions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("rating", sa.Integer()),
        sa.Column("correction", sa.Text()),
        sa.Column("choice_index", sa.Integer(), nullable=False),
        _created(),
    )
    op.create_index("ix_feedback_completion_id", "feedback", ["completion_id"])


def downgrade() -> None:
    for table in ("feedback", "completions", "ft_checkpoints", "ft_job_events", "ft_jobs", "files", "api_keys"):
        op.drop_table(table)
