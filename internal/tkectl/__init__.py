"""tkectl: the operator's command line (contexts, login, get/describe/create/apply/edit/delete/
watch of the platform's resources). Entry point: tke.cmd.tkectl; the parser is in cli.py."""
