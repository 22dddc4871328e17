"""Files and Batches: OpenAI's objects, as the official SDK sends and reads them."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BATCH_ENDPOINTS", "BatchCreateRequest", "BatchList", "BatchObject", "FileDeleted", "FileList",
           "FileObject"]

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
"""What a batch line may ask for (the `url` of every line, and the batch's `endpoint`)."""


class BatchCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    validation_status: ClassVar[int] = 400

    input_file_id: str = Field(min_length=1)
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchObject(BaseModel):
    """OpenAI's Batch (status, counts, output and error file ids)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict[str, int]
    errors: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
