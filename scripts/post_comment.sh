#!/usr/bin/env bash
# Post FILE as the pull request's koraft comment, or update the one posted before (found by its
# first-line marker), so a PR carries one metrics comment however often it is pushed.
#   GH_TOKEN=... GITHUB_REPOSITORY=owner/repo bash scripts/post_comment.sh PR_NUMBER FILE
set -euo pipefail
pr="$1" file="$2"
marker="<!-- koraft-metrics -->"
existing=$(gh api "repos/$GITHUB_REPOSITORY/issues/$pr/comments" --paginate \
  --jq ".[] | select(.body | startswith(\"$marker\")) | .id" | head -n 1)
if [ -n "$existing" ]; then
  gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" -F body=@"$file" > /dev/null
  echo "updated comment $existing"
else
  gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$pr/comments" -F body=@"$file" > /dev/null
  echo "posted a new comment"
fi
