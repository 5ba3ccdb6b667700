"""Generates datasets/drugs/eval/label_ddi_pairs.csv from the engineer's transcription below (written blind)."""
import csv
U = "https://dailymed.nlm.nih.gov/dailymed/search.cfm?query={}"
C, A, M = "contraindicated", "avoid", "caution"   # what the label section says
SPEC = [
 # label drug, section, label says, partners, note
 ("simvastatin", "4 CONTRAINDICATIONS", C, "itraconazole ketoconazole posaconazole voriconazole clarithromycin erythromycin nefazodone ritonavir gemfibrozil cyclosporine danazol", ""),
 ("simvastatin", "7 DRUG INTERACTIONS", M, "amiodarone dronedarone ranolazine diltiazem verapamil amlodipine lomitapide colchicine fenofibrate niacin", "dose limit / myopathy risk"),
 ("atorvastatin", "7 DRUG INTERACTIONS", M, "cyclosporine clarithromycin itraconazole gemfibrozil digoxin rifampin colchicine letermovir", ""),
 ("lovastatin", "4 CONTRAINDICATIONS", C, "itraconazole ketoconazole clarithromycin erythromycin nefazodone ritonavir posaconazole voriconazole", ""),
 ("lovastatin", "7 DRUG INTERACTIONS", A, "gemfibrozil cyclosporine", ""),
 ("lovastatin", "7 DRUG INTERACTIONS", M, "danazol amiodarone verapamil diltiazem dronedarone", "dose limit"),
 ("clopidogrel", "7 DRUG INTERACTIONS", A, "omeprazole esomeprazole", "CYP2C19 inhibitors reduce active metabolite"),
 ("clopidogrel", "7 DRUG INTERACTIONS", M, "repaglinide warfarin naproxen morphine sertraline", "NSAIDs, opioids, SSRIs named as classes"),
 ("warfarin", "7 DRUG INTERACTIONS", M, "amiodarone fluconazole metronidazole voriconazole fluvoxamine sulfamethoxazole rifampin carbamazepine aspirin clopidogrel ibuprofen sertraline", "CYP inhibitors/inducers table; antiplatelets, NSAIDs, SSRIs as classes"),
 ("apixaban", "7 DRUG INTERACTIONS", A, "ketoconazole itraconazole ritonavir rifampin carbamazepine phenytoin", "combined P-gp and strong CYP3A4 inhibitors / inducers"),
 ("apixaban", "7 DRUG INTERACTIONS", M, "clarithromycin aspirin clopidogrel naproxen enoxaparin", "anticoagulants, antiplatelets, NSAIDs"),
 ("rivaroxaban", "7 DRUG INTERACTIONS", A, "ketoconazole ritonavir rifampin carbamazepine phenytoin enoxaparin warfarin", ""),
 ("rivaroxaban", "7 DRUG INTERACTIONS", M, "aspirin clopidogrel naproxen", ""),
 ("dabigatran", "7 DRUG INTERACTIONS", A, "rifampin", ""),
 ("dabigatran", "7 DRUG INTERACTIONS", M, "dronedarone ketoconazole", "reduce dose in renal impairment"),
 ("tizanidine", "4 CONTRAINDICATIONS", C, "fluvoxamine ciprofloxacin", ""),
 ("tizanidine", "7 DRUG INTERACTIONS", A, "amiodarone mexiletine propafenone verapamil cimetidine famotidine acyclovir ethinyl estradiol", "other CYP1A2 inhibitors: avoid"),
 ("theophylline", "7 DRUG INTERACTIONS", M, "ciprofloxacin fluvoxamine cimetidine erythromycin carbamazepine phenytoin rifampin zileuton", ""),
 ("lithium", "7 DRUG INTERACTIONS", M, "lisinopril losartan ibuprofen naproxen hydrochlorothiazide metronidazole sertraline verapamil", "classes named in label"),
 ("fluoxetine", "4 CONTRAINDICATIONS", C, "phenelzine linezolid pimozide thioridazine", ""),
 ("fluoxetine", "7 DRUG INTERACTIONS", M, "tramadol sumatriptan warfarin", ""),
 ("sertraline", "4 CONTRAINDICATIONS", C, "selegiline linezolid pimozide disulfiram", "disulfiram: oral concentrate"),
 ("citalopram", "4 CONTRAINDICATIONS", C, "linezolid pimozide phenelzine", ""),
 ("citalopram", "7 DRUG INTERACTIONS", M, "omeprazole", "CYP2C19 inhibitor: 20 mg limit"),
 ("escitalopram", "4 CONTRAINDICATIONS", C, "pimozide linezolid", ""),
 ("paroxetine", "4 CONTRAINDICATIONS", C, "thioridazine pimozide linezolid tranylcypromine", ""),
 ("paroxetine", "7 DRUG INTERACTIONS", A, "tamoxifen", ""),
 ("duloxetine", "4 CONTRAINDICATIONS", C, "phenelzine linezolid", ""),
 ("duloxetine", "7 DRUG INTERACTIONS", A, "fluvoxamine ciprofloxacin", "potent CYP1A2 inhibitors"),
 ("venlafaxine", "4 CONTRAINDICATIONS", C, "phenelzine linezolid", ""),
 ("tramadol", "4 CONTRAINDICATIONS", C, "phenelzine", "MAOIs"),
 ("tramadol", "BOXED WARNING; 7 DRUG INTERACTIONS", A, "paroxetine bupropion quinidine ketoconazole rifampin carbamazepine alprazolam", "CYP2D6/3A4 interactions; benzodiazepines"),
 ("oxycodone", "BOXED WARNING; 7 DRUG INTERACTIONS", A, "ketoconazole clarithromycin ritonavir rifampin diazepam", ""),
 ("fentanyl", "BOXED WARNING; 7 DRUG INTERACTIONS", A, "ketoconazole ritonavir clarithromycin", ""),
 ("sildenafil", "4 CONTRAINDICATIONS", C, "nitroglycerin isosorbide mononitrate riociguat", ""),
 ("sildenafil", "7 DRUG INTERACTIONS", M, "ritonavir ketoconazole doxazosin", ""),
 ("tadalafil", "4 CONTRAINDICATIONS", C, "nitroglycerin riociguat", ""),
 ("tadalafil", "7 DRUG INTERACTIONS", M, "ritonavir ketoconazole rifampin doxazosin", ""),
 ("colchicine", "7 DRUG INTERACTIONS", A, "clarithromycin ketoconazole ritonavir cyclosporine", "strong CYP3A4 / P-gp inhibitors"),
 ("colchicine", "7 DRUG INTERACTIONS", M, "verapamil diltiazem atorvastatin gemfibrozil digoxin", ""),
 ("digoxin", "7 DRUG INTERACTIONS", M, "amiodarone dronedarone propafenone quinidine verapamil clarithromycin itraconazole ritonavir carvedilol", ""),
 ("amiodarone", "7 DRUG INTERACTIONS", A, "sofosbuvir", "symptomatic bradycardia"),
 ("amiodarone", "7 DRUG INTERACTIONS", M, "cyclosporine warfarin digoxin simvastatin", ""),
 ("spironolactone", "7 DRUG INTERACTIONS", M, "potassium chloride lisinopril losartan ibuprofen lithium cholestyramine", ""),
 ("eplerenone", "4 CONTRAINDICATIONS", C, "ketoconazole itraconazole clarithromycin ritonavir nefazodone potassium chloride amiloride triamterene spironolactone", ""),
 ("lisinopril", "7 DRUG INTERACTIONS", M, "hydrochlorothiazide ibuprofen aliskiren potassium chloride losartan", ""),
 ("lisinopril", "4 CONTRAINDICATIONS", C, "sacubitril", "36 hours"),
 ("sacubitril", "4 CONTRAINDICATIONS", C, "enalapril aliskiren", "aliskiren: patients with diabetes"),
 ("metformin", "7 DRUG INTERACTIONS", M, "topiramate ranolazine dolutegravir cimetidine acetazolamide", ""),
 ("allopurinol", "7 DRUG INTERACTIONS", M, "azathioprine mercaptopurine", "reduce dose"),
 ("febuxostat", "4 CONTRAINDICATIONS", C, "azathioprine mercaptopurine", ""),
 ("methotrexate", "7 DRUG INTERACTIONS", M, "trimethoprim sulfamethoxazole ibuprofen omeprazole probenecid amoxicillin", "NSAIDs, PPIs, penicillins as classes"),
 ("levothyroxine", "7 DRUG INTERACTIONS", M, "calcium carbonate ferrous sulfate omeprazole sucralfate cholestyramine sevelamer", "separate doses / absorption"),
 ("ciprofloxacin", "7 DRUG INTERACTIONS", M, "warfarin glyburide methotrexate phenytoin clozapine ropinirole calcium carbonate sucralfate", ""),
 ("doxycycline", "7 DRUG INTERACTIONS", M, "calcium carbonate ferrous sulfate warfarin isotretinoin", ""),
 ("isotretinoin", "7 DRUG INTERACTIONS", A, "minocycline tetracycline", "pseudotumor cerebri"),
 ("ketoconazole", "4 CONTRAINDICATIONS", C, "alprazolam triazolam midazolam lurasidone", ""),
 ("clarithromycin", "4 CONTRAINDICATIONS", C, "pimozide ergotamine", ""),
 ("ergotamine", "4 CONTRAINDICATIONS", C, "ritonavir ketoconazole itraconazole", ""),
 ("ziprasidone", "4 CONTRAINDICATIONS", C, "dofetilide sotalol quinidine moxifloxacin thioridazine chlorpromazine pimozide droperidol arsenic trioxide", ""),
 ("dofetilide", "4 CONTRAINDICATIONS", C, "verapamil cimetidine trimethoprim ketoconazole hydrochlorothiazide prochlorperazine megestrol dolutegravir", ""),
 ("thioridazine", "4 CONTRAINDICATIONS", C, "fluvoxamine propranolol pindolol", ""),
 ("quetiapine", "7 DRUG INTERACTIONS", M, "ketoconazole phenytoin carbamazepine", "dose adjustment"),
 ("ondansetron", "4 CONTRAINDICATIONS", C, "apomorphine", ""),
 ("rasagiline", "4 CONTRAINDICATIONS", C, "meperidine tramadol methadone dextromethorphan cyclobenzaprine", ""),
 ("selegiline", "4 CONTRAINDICATIONS", C, "meperidine tramadol methadone", ""),
 ("phenelzine", "4 CONTRAINDICATIONS", C, "meperidine dextromethorphan bupropion buspirone pseudoephedrine", ""),
 ("bupropion", "4 CONTRAINDICATIONS", C, "linezolid", ""),
 ("bupropion", "7 DRUG INTERACTIONS", M, "clopidogrel desipramine metoprolol", ""),
 ("sumatriptan", "4 CONTRAINDICATIONS", C, "ergotamine dihydroergotamine", ""),
 ("rizatriptan", "7 DRUG INTERACTIONS", M, "propranolol", "5 mg dose"),
 ("ticagrelor", "7 DRUG INTERACTIONS", A, "ketoconazole clarithromycin rifampin", ""),
 ("ticagrelor", "7 DRUG INTERACTIONS", M, "aspirin simvastatin digoxin", ""),
 ("prasugrel", "7 DRUG INTERACTIONS", M, "warfarin ibuprofen", ""),
 ("valproic acid", "7 DRUG INTERACTIONS", M, "lamotrigine meropenem topiramate aspirin", ""),
 ("lamotrigine", "7 DRUG INTERACTIONS", M, "carbamazepine rifampin ethinyl estradiol", ""),
 ("tacrolimus", "7 DRUG INTERACTIONS", M, "ketoconazole clarithromycin rifampin", ""),
 ("alprazolam", "7 DRUG INTERACTIONS", M, "fluvoxamine cimetidine", ""),
 ("gabapentin", "7 DRUG INTERACTIONS", M, "morphine hydrocodone", "opioids: respiratory depression"),
 ("potassium chloride", "4 CONTRAINDICATIONS", C, "triamterene amiloride", "potassium-sparing diuretics"),
]
MULTI = {"isosorbide mononitrate", "potassium chloride", "ethinyl estradiol", "calcium carbonate", "ferrous sulfate",
         "arsenic trioxide", "valproic acid"}
def split(s):
    words, out, i = s.split(), [], 0
    while i < len(words):
        two = " ".join(words[i:i + 2])
        if two in MULTI:
            out.append(two); i += 2
        else:
            out.append(words[i]); i += 1
    return out
seen, rows = set(), []
for drug, section, says, partners, note in SPEC:
    for p in split(partners):
        key = tuple(sorted((drug, p)))
        if key in seen or drug == p:
            continue
        seen.add(key)
        rows.append({"pair_id": f"L{len(rows)+1:03d}", "label_drug": drug, "other_drug": p,
                     "label_says": says, "expected_min_severity": {"contraindicated": "major", "avoid": "major", "caution": "moderate"}[says],
                     "source_url": U.format(drug.replace(" ", "+")), "source_section": section, "note": note})
with open("datasets/drugs/eval/label_ddi_pairs.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
from collections import Counter
print(len(rows), Counter(r["label_says"] for r in rows))
