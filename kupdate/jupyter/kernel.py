"""The kupdate Jupyter kernel: IPython with the kupdate magics loaded and the KB opened as `kb`.

    python -m kupdate.jupyter.kernel -f CONNECTION_FILE     (what `kupdate kernel install` registers)

The KB comes from `KUPDATE_KB`, which the kernelspec sets. Opening a KB loads no model (they load
on first use), so start-up stays as fast as a plain IPython kernel.
"""

from __future__ import annotations

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import Type

import kupdate


class KupdateKernel(IPythonKernel):
    """An IPython kernel that reports itself as kupdate."""

    implementation = "kupdate"
    implementation_version = kupdate.__version__

    @property
    def banner(self) -> str:  # type: ignore[override]
        return (super().banner or "") + (
            "\nkupdate: the knowledge base is `kb`; try %kupdate status, %kupdate ask QUESTION or %%ask.\n"
        )


class KupdateKernelApp(IPKernelApp):
    """IPKernelApp that loads the kupdate extension and opens the KB before the first cell runs."""

    name = "kupdate-kernel"
    kernel_class = Type(KupdateKernel, klass="ipykernel.kernelbase.Kernel").tag(config=True)

    def init_extensions(self) -> None:
        super().init_extensions()
        self.shell.extension_manager.load_extension("kupdate")

    def init_code(self) -> None:
        super().init_code()
        from kupdate.jupyter.magics import open_startup_kb

        # A missing KB must not stop the kernel: the first magic reports it in the notebook.
        problem = open_startup_kb(self.shell)
        if problem:
            self.log.warning("kupdate: %s", problem)


def main() -> None:
    """Console entry point of the kernel process."""
    KupdateKernelApp.launch_instance()


if __name__ == "__main__":
    main()
