"""pytest-ilp inside other tools' loops. Each module imports its tool: import it explicitly
(`from pytest_ilp.integrations.transformers import ILPCallback`); `import pytest_ilp` never
does."""
